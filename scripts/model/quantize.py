"""Static int8 quantisation of the EfficientNet-Lite0 pack (ONNX Runtime's quantisation tools),
and the measurement that compares quantisation variants against fp32.

``fetch.py`` calls :func:`build` for the ``efficientnet-lite0-int8`` pack; ``scripts/model/
quantize.py measure`` (through ``scripts/bench-int8``) prints the variant table. The photo sets
are described in ``photos.py``.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import photos  # noqa: E402
import reference  # noqa: E402

SMALL_SIDE = 64

# Every variant tried; VARIANTS[PACK_VARIANT] builds the pack. Each is (description, options).
# Options: fmt qdq|qop; per_channel; reduce_range; method minmax|entropy|percentile;
# weight u8 (default s8); act s8 (default u8); fp32 = nodes kept in float: "stem", "head"
# (conv_head + fc), "depthwise", "project" (the linear 1x1 convs), several joined by "+"
# ("stem+head"), or "nodes:a,b".
_PC = dict(fmt="qdq", per_channel=True, method="minmax")
VARIANTS = {
    "qdq-pc-minmax": ("QDQ, per-channel, MinMax", _PC),
    "qdq-pt-minmax": ("QDQ, per-tensor, MinMax", dict(_PC, per_channel=False)),
    "qdq-pc-entropy": ("QDQ, per-channel, Entropy", dict(_PC, method="entropy")),
    "qdq-pc-percentile": ("QDQ, per-channel, Percentile 99.999", dict(_PC, method="percentile")),
    "qdq-pc-minmax-rr": ("QDQ, per-channel, MinMax, reduce_range", dict(_PC, reduce_range=True)),
    "qdq-pc-minmax-u8u8": ("QDQ, per-channel, MinMax, uint8 weights", dict(_PC, weight="u8")),
    "qdq-pc-minmax-s8s8": ("QDQ, per-channel, MinMax, int8 activations", dict(_PC, act="s8")),
    "qop-pc-minmax": ("QOperator, per-channel, MinMax", dict(_PC, fmt="qop")),
    "qdq-pc-minmax-fp32-stem": ("as qdq-pc-minmax, stem conv in fp32", dict(_PC, fp32="stem")),
    "qdq-pc-minmax-fp32-head": ("as qdq-pc-minmax, conv_head + fc in fp32", dict(_PC, fp32="head")),
    "qdq-pc-minmax-fp32-ends": ("as qdq-pc-minmax, stem + conv_head + fc in fp32", dict(_PC, fp32="stem+head")),
    "qdq-pc-minmax-fp32-dw": ("as qdq-pc-minmax, the 16 depthwise convs in fp32", dict(_PC, fp32="depthwise")),
    "qdq-pc-minmax-fp32-dw-stem": (
        "as qdq-pc-minmax, the stem and the 16 depthwise convs in fp32",
        dict(_PC, fp32="stem+depthwise"),
    ),
    "qdq-pc-minmax-fp32-proj": ("as qdq-pc-minmax, the 16 linear project convs in fp32", dict(_PC, fp32="project")),
    "qdq-pc-minmax-fp32-dw0": ("as qdq-pc-minmax, the first depthwise conv in fp32", dict(_PC, fp32="nodes:Conv_2")),
    # The layers `quantize.py sensitivity` ranks most sensitive on the calibration photos.
    "qdq-pc-minmax-fp32-sens4": (
        "as qdq-pc-minmax, the 4 most sensitive layers in fp32",
        dict(_PC, fp32="nodes:Conv_0,Conv_2,Conv_31,Conv_5"),
    ),
    "qdq-pc-minmax-fp32-sens8": (
        "as qdq-pc-minmax, the 8 most sensitive layers in fp32",
        dict(_PC, fp32="nodes:Conv_0,Conv_2,Conv_31,Conv_5,Conv_46,Conv_23,Conv_10,Conv_14"),
    ),
}
PACK_VARIANT = "qdq-pc-minmax"
# The test pack with a float island (fetch.py's build_int8_island_test_pack): the first depthwise
# conv in float, whose per-channel weight ranges a per-tensor scale cannot hold.
ISLAND_TEST_VARIANT = "qdq-pc-minmax-fp32-dw0"


def log(msg: str) -> None:
    print(msg, flush=True)


# --- photo sets ------------------------------------------------------------------------------


def calibration_set(cache, log=log) -> dict[str, bytes]:
    """{name: PNG bytes} of the calibration stamps on white, cached in photos/calibration/."""
    directory = os.path.join(cache.root, "photos", "calibration")
    key = f"calibration:{photos.DEBS[photos.CALIBRATION_PACKAGE][2]}:{photos.CALIBRATION_COUNT}"
    if not cache.stamp_ok(directory, key):
        log(f"calibration photos: choosing the photographic stamps of {photos.CALIBRATION_PACKAGE}")
        deb = photos.fetch_deb(cache.downloads, photos.CALIBRATION_PACKAGE, log)
        members = photos.deb_members(deb, lambda n: n.startswith(photos.CALIBRATION_PREFIX) and n.endswith(".png"))
        chosen = {n: d for n, d in sorted(members.items()) if photos._is_photo_stamp(n, d)}
        if len(chosen) != photos.CALIBRATION_COUNT:
            raise photos.PhotoError(f"calibration rule picked {len(chosen)} stamps, expected {photos.CALIBRATION_COUNT}")
        os.makedirs(directory, exist_ok=True)
        for f in os.listdir(directory):
            os.remove(os.path.join(directory, f))
        names = []
        for n, d in chosen.items():
            flat = n[len(photos.CALIBRATION_PREFIX):].replace("/", "_")
            with open(os.path.join(directory, flat), "wb") as f:
                f.write(photos.on_white(d))
            names.append(flat)
        cache.write_stamp(directory, key, names)
    log(f"calibration photos: {directory}")
    return _read_dir(directory)


def evaluation_set(cache, skimage_member, log=log) -> dict[str, bytes]:
    """{name: bytes} of the evaluation photos, cached in photos/evaluation/."""
    directory = os.path.join(cache.root, "photos", "evaluation")
    key = "evaluation:" + ",".join(photos.DEBS[p][2] for p in photos.EVALUATION_DEBS) + ":" + ",".join(photos.EVALUATION_SKIMAGE)
    if not cache.stamp_ok(directory, key):
        log("evaluation photos: extracting from the pinned Debian packages and the scikit-image wheel")
        os.makedirs(directory, exist_ok=True)
        names = []
        for package, wanted in photos.EVALUATION_DEBS.items():
            deb = photos.fetch_deb(cache.downloads, package, log)
            got = photos.deb_members(deb, lambda n, w=set(wanted): n in w)
            missing = set(wanted) - set(got)
            if missing:
                raise photos.PhotoError(f"{package}: missing {sorted(missing)}")
            for n, d in got.items():
                parts = n.split("/")
                stem = parts[-4] if "/contents/images/" in n else parts[-1].rsplit(".", 1)[0]
                flat = f"{package}_{stem}.{n.rsplit('.', 1)[1]}"
                with open(os.path.join(directory, flat), "wb") as f:
                    f.write(d)
                names.append(flat)
        for stem in photos.EVALUATION_SKIMAGE:
            flat = f"scikit-image_{stem}.{'jpg' if stem == 'rocket' else 'png'}"
            with open(os.path.join(directory, flat), "wb") as f:
                f.write(skimage_member(stem))
            names.append(flat)
        cache.write_stamp(directory, key, names)
    log(f"evaluation photos: {directory}")
    return _read_dir(directory)


def _read_dir(directory: str) -> dict[str, bytes]:
    out = {}
    for n in sorted(os.listdir(directory)):
        if not n.startswith("."):
            with open(os.path.join(directory, n), "rb") as f:
                out[n] = f.read()
    return out


def small(data: bytes) -> bytes:
    """The course's kind of image: the centred square of the photo downscaled to 64x64 (PIL
    antialiased bilinear), as PNG."""
    from PIL import Image

    img = reference.decode(data)
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((SMALL_SIDE, SMALL_SIDE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tensors(manifest: dict, images: dict[str, bytes]) -> np.ndarray:
    return np.concatenate([reference.preprocess(d, manifest) for d in images.values()])


# --- quantisation ----------------------------------------------------------------------------


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a fixed tensor batch, one image at a
    time, in a fixed order."""

    def __init__(self, input_name: str, batch: np.ndarray):
        self.input_name = input_name
        self.batch = batch
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batch):
            return None
        x = self.batch[self.i : self.i + 1]
        self.i += 1
        return {self.input_name: x}

    def rewind(self):
        self.i = 0


def named_copy(fp32_path: str, out_path: str) -> None:
    """The fp32 graph with every node named (``<op>_<index>``): the generated graph leaves node
    names empty, and the quantiser selects nodes to keep in float by name."""
    import onnx

    m = onnx.load(fp32_path)
    for i, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    onnx.save(m, out_path)


def _layers(model) -> list:
    """The graph's weighted layers, in order: what can be quantised or kept in float."""
    return [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]


def _fp32_nodes(model_path: str, which: str) -> list[str]:
    import onnx

    m = onnx.load(model_path)
    if which.startswith("nodes:"):
        return which[len("nodes:"):].split(",")
    convs = _layers(m)
    # Convs whose output feeds a Clip (ReLU6); the others are the linear bottlenecks.
    clipped = {n.input[0] for n in m.graph.node if n.op_type == "Clip"}
    groups = {
        "stem": [convs[0].name],
        # The last 1x1 conv (conv_head, 320 -> 1280) and the classifier.
        "head": [convs[-2].name, convs[-1].name],
        "depthwise": [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)],
        "project": [n.name for n in convs if n.op_type == "Conv" and n.output[0] not in clipped],
    }
    return [name for part in which.split("+") for name in groups[part]]


def quantize(fp32_path: str, out_path: str, calib: np.ndarray, input_name: str, options: dict) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[options["method"]]
    extra = dict(options.get("extra", {}))
    if options["method"] == "percentile":
        extra["CalibPercentile"] = 99.999
    with tempfile.TemporaryDirectory() as tmp:
        named = os.path.join(tmp, "named.onnx")
        named_copy(fp32_path, named)
        exclude = _fp32_nodes(named, options["fp32"]) if options.get("fp32") else []
        quantize_static(
            named,
            out_path,
            _Reader(input_name, calib),
            quant_format=QuantFormat.QDQ if options["fmt"] == "qdq" else QuantFormat.QOperator,
            per_channel=options.get("per_channel", False),
            reduce_range=options.get("reduce_range", False),
            activation_type=QuantType.QInt8 if options.get("act") == "s8" else QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if options.get("weight") == "u8" else QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=exclude,
            extra_options=extra,
        )


# --- measurement -----------------------------------------------------------------------------


def _session(path: str, threads: int):
    import onnxruntime as ort

    return ort.InferenceSession(path, reference.session_options(threads), providers=["CPUExecutionProvider"])


def logits(path: str, batch: np.ndarray, input_name: str) -> np.ndarray:
    s = _session(path, 1)
    return np.concatenate([s.run(None, {input_name: batch[i : i + 1]})[0] for i in range(len(batch))])


def ms_per_image(path: str, batch: np.ndarray, input_name: str, threads: int, rounds: int) -> float:
    """Best-of-``rounds`` mean milliseconds per image at batch 1."""
    s = _session(path, threads)
    s.run(None, {input_name: batch[:1]})
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(len(batch)):
            s.run(None, {input_name: batch[i : i + 1]})
        best = min(best, (time.perf_counter() - t0) / len(batch))
    return 1000.0 * best


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int((a.argmax(1) == b.argmax(1)).sum()), len(a)


# The lead of fp32's top-1 over its top-2 (softmax probabilities) from which a photo counts as
# clear-cut; below it, fp32 itself is close to a tie and a quantisation flip is a near-tie flip.
CLEAR_LEAD = 0.1


def clear_cut(ref: np.ndarray) -> np.ndarray:
    """Which rows of fp32 logits ``ref`` have a top-1 leading its top-2 by ``CLEAR_LEAD``."""
    top2 = np.sort(reference.softmax(ref), 1)[:, -2:]
    return top2[:, 1] - top2[:, 0] >= CLEAR_LEAD


def _pct(pair: tuple[int, int]) -> str:
    return f"{pair[0]}/{pair[1]} ({100 * pair[0] / pair[1]:.1f}%)"


def _fp32_pack(cache_dir: str):
    """The cache, the fp32 pack's directory, model path, manifest and input name, and the
    calibration photos as a batch: what every measurement starts from."""
    import fetch

    cache = fetch.Cache(cache_dir)
    fp32_dir = fetch.build_efficientnet(cache, fetch.fetch_golden(cache))
    manifest = reference.load_manifest(fp32_dir)
    calib = tensors(manifest, calibration_set(cache))
    return cache, fp32_dir, os.path.join(fp32_dir, "model.onnx"), manifest, manifest["input"]["name"], calib


def measure(cache_dir: str, variants: list[str], rounds: int) -> int:
    """Prints the variant table: size, speed at 1 and 2 threads against fp32, top-1 agreement
    with fp32 on the evaluation photos and on their 64x64 versions, golden labels."""
    import fetch

    cache, fp32_dir, fp32, manifest, inp, calib = _fp32_pack(cache_dir)
    labels = reference.load_labels(fp32_dir, manifest)
    evaluation = evaluation_set(cache, lambda stem: fetch.skimage_photo(cache, stem))
    names = list(evaluation)
    photos_t = tensors(manifest, evaluation)
    small_t = tensors(manifest, {n: small(d) for n, d in evaluation.items()})
    golden_idx = [names.index("scikit-image_chelsea.png"), names.index("scikit-image_coffee.png")]
    ref_photos, ref_small = logits(fp32, photos_t, inp), logits(fp32, small_t, inp)
    speed = {t: ms_per_image(fp32, photos_t, inp, t, rounds) for t in (1, 2)}
    golden_fp32 = " / ".join(labels[int(ref_photos[i].argmax())] for i in golden_idx)

    import onnxruntime

    print(
        f"\nint8 variants against fp32: {len(calib)} calibration photos, {len(names)} evaluation photos "
        f"(disjoint; scripts/model/photos.py), onnxruntime {onnxruntime.__version__}, batch 1, best of {rounds} "
        f"passes; {os.cpu_count()} CPUs; load {open('/proc/loadavg').read().split()[0]}\n"
    )
    clear_p, clear_s = clear_cut(ref_photos), clear_cut(ref_small)
    print(
        f"'clear-cut': the photos where fp32's top-1 leads its top-2 by >= {CLEAR_LEAD} in probability "
        f"({clear_p.sum()} of {len(names)} photos, {clear_s.sum()} of their 64x64 versions)\n"
    )
    print(
        "| variant | size MB | ms/img 1 thread (speed-up) | ms/img 2 threads (speed-up) | agreement photos "
        "| agreement 64x64 | agreement clear-cut photos / 64x64 | chelsea / coffee |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| fp32 | {os.path.getsize(fp32) / 1e6:.1f} | {speed[1]:.2f} | {speed[2]:.2f} | — | — | — | {golden_fp32} |",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            out = os.path.join(tmp, f"{v}.onnx")
            quantize(fp32, out, calib, inp, VARIANTS[v][1])
            q_photos, q_small = logits(out, photos_t, inp), logits(out, small_t, inp)
            ap, asm = agreement(ref_photos, q_photos), agreement(ref_small, q_small)
            cp = agreement(ref_photos[clear_p], q_photos[clear_p])
            cs = agreement(ref_small[clear_s], q_small[clear_s])
            s = {t: ms_per_image(out, photos_t, inp, t, rounds) for t in (1, 2)}
            g = " / ".join(labels[int(q_photos[i].argmax())] for i in golden_idx)
            mark = " (pack)" if v == PACK_VARIANT else ""
            print(
                f"| {v}{mark}: {VARIANTS[v][0]} | {os.path.getsize(out) / 1e6:.1f} | {s[1]:.2f} ({speed[1] / s[1]:.2f}x) | "
                f"{s[2]:.2f} ({speed[2] / s[2]:.2f}x) | {_pct(ap)} | {_pct(asm)} | {cp[0]}/{cp[1]} / {cs[0]}/{cs[1]} | {g} |",
                flush=True,
            )
    return 0


def _kl(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean KL divergence of ``got``'s softmax from ``ref``'s over a batch of logits."""
    p, q = reference.softmax(ref), reference.softmax(got)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), 1)))


def sensitivity(cache_dir: str) -> int:
    """Per-layer sensitivity on the calibration photos only (never the evaluation photos): for each
    Conv/Gemm, the pack's variant with that one layer kept in float, and the mean KL divergence of
    its softmax from fp32's; most sensitive (lowest KL once in float) first. The fp32-sens* variants
    keep the first names of this list in float."""
    import onnx

    _, _, fp32, _, inp, calib = _fp32_pack(cache_dir)
    ref = logits(fp32, calib, inp)
    with tempfile.TemporaryDirectory() as tmp:
        named = os.path.join(tmp, "named.onnx")
        named_copy(fp32, named)
        layers = [n.name for n in _layers(onnx.load(named))]
        out = os.path.join(tmp, "q.onnx")
        quantize(fp32, out, calib, inp, VARIANTS[PACK_VARIANT][1])
        base = _kl(ref, logits(out, calib, inp))
        kls = {}
        for layer in layers:
            quantize(fp32, out, calib, inp, dict(VARIANTS[PACK_VARIANT][1], fp32=f"nodes:{layer}"))
            kls[layer] = _kl(ref, logits(out, calib, inp))
    print(f"\nlayer sensitivity on {len(calib)} calibration photos; {PACK_VARIANT} alone: KL {base:.5f}\n")
    print("| layer kept in float | KL from fp32 |")
    print("|---|---|")
    for layer in sorted(kls, key=kls.get):
        print(f"| {layer} | {kls[layer]:.5f} |")
    return 0


def main(argv: list[str]) -> int:
    import argparse
    import logging

    parser = argparse.ArgumentParser(prog="quantize.py")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="print the variant table")
    m.add_argument("--cache-dir", required=True)
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("variants", nargs="*", default=list(VARIANTS))
    sens = sub.add_parser("sensitivity", help="print the per-layer sensitivity on the calibration photos")
    sens.add_argument("--cache-dir", required=True)
    args = parser.parse_args(argv)
    # onnxruntime.quantization logs advice ("consider pre-processing") at WARNING on every call.
    logging.getLogger().setLevel(logging.ERROR)
    if args.command == "sensitivity":
        return sensitivity(args.cache_dir)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    return measure(args.cache_dir, args.variants, args.rounds)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
