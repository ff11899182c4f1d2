"""The Python reference pipeline: PIL preprocessing as each pack's manifest describes it, plus
onnxruntime inference. The Rust classifier is tested against what this module produces.

The preprocessing follows each model family's own reference:

* ``center-crop-then-resize`` (TensorFlow's EfficientNet eval): crop a centred square of side
  ``int(fraction * min(h, w))`` at offset ``(dim - crop + 1) // 2``, then resize it;
* ``resize-then-center-crop`` (torchvision ``Resize(s)`` + ``CenterCrop``): shorter side to
  ``s`` (longer side ``int(s * long / short)``), then crop at ``int(round((dim - size) / 2))``;
* ``exact``: resize to width x height, aspect ratio not kept;
* ``none``: the image must already have the input size (the course's raw ``ToTensor()``).
"""

from __future__ import annotations

import os
import time
import tomllib

import numpy as np
from PIL import Image, ImageOps

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos3": Image.Resampling.LANCZOS,
}


def load_manifest(pack_dir: str) -> dict:
    with open(os.path.join(pack_dir, "pack.toml"), "rb") as f:
        return tomllib.load(f)


def load_labels(pack_dir: str, manifest: dict) -> list[str]:
    with open(os.path.join(pack_dir, manifest.get("labels", "labels.txt")), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def decode(data: bytes) -> Image.Image:
    import io

    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def resize_rgb(img: Image.Image, manifest: dict) -> Image.Image:
    inp = manifest["input"]
    pre = manifest["preprocess"]
    width, height = inp["width"], inp["height"]
    resize = pre["resize"]
    mode = resize["mode"]
    filt = FILTERS[pre.get("filter", "bilinear")]
    w, h = img.size
    if mode == "center-crop-then-resize":
        crop = int(resize["crop_fraction"] * min(w, h))
        left, top = (w - crop + 1) // 2, (h - crop + 1) // 2
        img = img.crop((left, top, left + crop, top + crop))
        return img.resize((width, height), filt)
    if mode == "resize-then-center-crop":
        short = resize["shorter_side"]
        if w <= h:
            nw, nh = short, int(short * h / w)
        else:
            nw, nh = int(short * w / h), short
        img = img.resize((nw, nh), filt)
        left = int(round((nw - width) / 2.0))
        top = int(round((nh - height) / 2.0))
        return img.crop((left, top, left + width, top + height))
    if mode == "exact":
        return img.resize((width, height), filt)
    if mode == "none":
        if (w, h) != (width, height):
            raise ValueError(f"image is {w}x{h}, pack takes exactly {width}x{height} (resize = none)")
        return img
    raise ValueError(f"unknown resize mode {mode}")


def to_tensor(img: Image.Image, manifest: dict) -> np.ndarray:
    pre = manifest["preprocess"]
    scale = np.float32(pre.get("scale", 1.0))
    mean = np.asarray(pre.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
    std = np.asarray(pre.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
    x = np.asarray(img, dtype=np.float32)  # HWC
    if manifest["input"].get("channel_order", "rgb") == "bgr":
        x = x[:, :, ::-1]
    x = (x * scale - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None, ...], dtype=np.float32)


def preprocess(data: bytes, manifest: dict) -> np.ndarray:
    return to_tensor(resize_rgb(decode(data), manifest), manifest)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# The ONNX Runtime graph rewrites the app tier turns off, so what is measured here is what it runs
# (DISABLED_OPTIMIZERS in crates/classifier/src/classifier.rs): WeightBiasQuantization quantises,
# per tensor, the float weights of every Conv/Gemm fed by a DequantizeLinear, i.e. exactly the
# layers a quantised pack keeps in float on purpose.
DISABLED_OPTIMIZERS = "WeightBiasQuantization"


def session_options(threads: int):
    """Session options as the app tier sets them: intra-op threads, one inter-op thread, and
    :data:`DISABLED_OPTIMIZERS` off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("optimization.disable_specified_optimizers", DISABLED_OPTIMIZERS)
    return opts


def session(pack_dir: str, threads: int = 1):
    import onnxruntime as ort

    manifest = load_manifest(pack_dir)
    opts = session_options(threads)
    sess = ort.InferenceSession(
        os.path.join(pack_dir, manifest.get("model", "model.onnx")), opts, providers=["CPUExecutionProvider"]
    )
    return sess, manifest


def scores(sess, manifest: dict, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (raw outputs, probabilities) for a batch tensor."""
    inp = manifest["input"].get("name") or sess.get_inputs()[0].name
    out_name = manifest.get("output", {}).get("name") or sess.get_outputs()[0].name
    out = sess.run([out_name], {inp: tensor})[0]
    probs = softmax(out) if manifest.get("output", {}).get("kind", "logits") == "logits" else out
    return out, probs


def top_k(probs: np.ndarray, labels: list[str], k: int = 5) -> list[dict]:
    idx = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i], "score": float(probs[i])} for i in idx]


def reference_for(pack_dir: str, images: dict[str, str], out_dir: str) -> dict:
    """Top-5 for each image plus the raw input tensor and output vector as little-endian f32
    files (``<stem>.input.f32`` / ``<stem>.output.f32``) for exact comparisons in Rust."""
    sess, manifest = session(pack_dir, threads=1)
    labels = load_labels(pack_dir, manifest)
    os.makedirs(out_dir, exist_ok=True)
    result = {}
    for stem, path in images.items():
        with open(path, "rb") as f:
            tensor = preprocess(f.read(), manifest)
        raw, probs = scores(sess, manifest, tensor)
        tensor.astype("<f4").tofile(os.path.join(out_dir, f"{stem}.input.f32"))
        raw[0].astype("<f4").tofile(os.path.join(out_dir, f"{stem}.output.f32"))
        result[stem] = {"image": path, "top5": top_k(probs[0], labels)}
    return result


def bench(pack_dir: str, paths: list[str], threads: int, batch: int, rounds: int) -> dict:
    """Mean milliseconds per image for decode, preprocess and inference (and their sum)."""
    sess, manifest = session(pack_dir, threads=threads)
    blobs = [open(p, "rb").read() for p in paths]
    t_dec = t_pre = t_inf = 0.0
    n = 0
    # Warm-up run so one-time allocations do not count.
    scores(sess, manifest, preprocess(blobs[0], manifest))
    for _ in range(rounds):
        for i in range(0, len(blobs), batch):
            chunk = blobs[i : i + batch]
            t0 = time.perf_counter()
            imgs = [decode(b) for b in chunk]
            t1 = time.perf_counter()
            tensor = np.concatenate([to_tensor(resize_rgb(im, manifest), manifest) for im in imgs])
            t2 = time.perf_counter()
            scores(sess, manifest, tensor)
            t3 = time.perf_counter()
            t_dec += t1 - t0
            t_pre += t2 - t1
            t_inf += t3 - t2
            n += len(chunk)
    ms = lambda t: 1000.0 * t / n  # noqa: E731
    return {"decode_ms": ms(t_dec), "preprocess_ms": ms(t_pre), "inference_ms": ms(t_inf), "images": n}
