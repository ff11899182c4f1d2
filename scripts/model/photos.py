"""The photo sets for the int8 pack: calibration (builds the pack) and evaluation (measures it).

Both come from registry packages pinned by version and sha256, and the two sets are disjoint by
construction (different packages):

* **calibration**: the photographic stamps of Debian's ``tuxpaint-stamps-default``: real photos of
  animals, plants, food, tools, vehicles, cut out on a transparent background, composited here on
  white. Chosen by a fixed rule (below), not by hand: no ``cartoon/`` directory, shorter side
  >= 100 px, >= 5000 opaque pixels with >= 4000 distinct colours (drawings have few).
  Licence: GPL-2 (debian/copyright of the package).
* **evaluation**: 62 full-frame photos: OpenCV's sample photos (``opencv-doc``), photographic
  wallpapers of KDE Plasma (``plasma-workspace-wallpapers``) and MATE (``mate-backgrounds``,
  ``nature/``), the jigsaw photos of KDE's Palapeli (``palapeli-data``) and six photos of
  scikit-image's data (including the golden ``chelsea.png`` and ``coffee.png``). Licences: OpenCV
  Apache-2.0/BSD (samples, no separate image licence stated), Plasma and MATE wallpapers and
  Palapeli GPL-2+ (their debian/copyright), scikit-image data CC0 / public domain (its
  ``skimage/data/README.txt``).

The photos are only read at build or measuring time from the cache; none is committed.

Debian packages are fetched with ``apt-get download`` (no root needed) and unpacked with Python
alone (``ar`` + ``tar``), so ``dpkg`` is not needed either.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import subprocess
import tarfile

# (package, version, file name in the pool, sha256 of the .deb)
DEBS = {
    "tuxpaint-stamps-default": (
        "2022.06.04-1",
        "tuxpaint-stamps-default_2022.06.04-1_all.deb",
        "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
    ),
    "opencv-doc": (
        "4.6.0+dfsg-12",
        "opencv-doc_4.6.0+dfsg-12_all.deb",
        "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
    ),
    "plasma-workspace-wallpapers": (
        "4:5.27.5-2",
        "plasma-workspace-wallpapers_5.27.5-2_all.deb",
        "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
    ),
    "mate-backgrounds": (
        "1.26.0-1",
        "mate-backgrounds_1.26.0-1_all.deb",
        "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
    ),
    "palapeli-data": (
        "4:22.12.3-1",
        "palapeli-data_22.12.3-1_all.deb",
        "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058",
    ),
}

CALIBRATION_PACKAGE = "tuxpaint-stamps-default"
CALIBRATION_PREFIX = "./usr/share/tuxpaint/stamps/"
# How many stamps the rule picks from the pinned .deb (checked at every extraction).
CALIBRATION_COUNT = 205

_OCV = "./usr/share/doc/opencv-doc/examples/"
_PLASMA = "./usr/share/wallpapers/"
EVALUATION_DEBS = {
    "opencv-doc": [
        _OCV + n
        for n in (
            "data/aero1.jpg data/aero3.jpg data/apple.jpg data/baboon.jpg data/basketball1.png "
            "data/building.jpg data/butterfly.jpg data/chicky_512.png data/ela_original.jpg "
            "data/fruits.jpg data/home.jpg data/leuvenA.jpg data/messi5.jpg data/orange.jpg "
            "data/rubberwhale1.png data/smarties.png data/squirrel_cls.jpg data/stuff.jpg "
            "data/board.jpg data/aloeL.jpg data/graf1.png data/left.jpg data/licenseplate_motion.jpg "
            "alphamat/input_images/plant.jpg text/scenetext01.jpg text/scenetext03.jpg "
            "text/scenetext04.jpg text/scenetext05.jpg"
        ).split()
    ],
    "plasma-workspace-wallpapers": [
        _PLASMA + n
        for n in (
            "BytheWater/contents/images/1920x1080.jpg ColdRipple/contents/images/1920x1080.jpg "
            "DarkestHour/contents/images/1920x1080.jpg EveningGlow/contents/images/1920x1080.jpg "
            "FallenLeaf/contents/images/1920x1080.jpg Grey/contents/images/1920x1080.jpg "
            "Kite/contents/images/1920x1080.jpg OneStandsOut/contents/images/1920x1080.jpg "
            "Path/contents/images/1920x1080.jpg Volna/contents/images/5120x2880.jpg "
            "summer_1am/contents/images/1920x1080.jpg"
        ).split()
    ],
    "mate-backgrounds": [
        f"./usr/share/backgrounds/mate/nature/{n}.jpg"
        for n in (
            "Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird RainDrops Storm TwoWings Wood "
            "YellowFlower"
        ).split()
    ],
    "palapeli-data": [
        f"./usr/share/palapeli/collection/{n}.jpg"
        for n in "castle-maintenon cincinnati-bridge citrus-fruits european-honey-bee panther-chameleon-female".split()
    ],
}
# From the scikit-image wheel fetch.py already pins (member path, sha256).
EVALUATION_SKIMAGE = ["astronaut", "camera", "chelsea", "coffee", "motorcycle_left", "rocket"]


class PhotoError(Exception):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_deb(downloads: str, package: str, log) -> str:
    """The pinned .deb in ``downloads`` (``apt-get download`` when missing or wrong)."""
    version, filename, digest = DEBS[package]
    path = os.path.join(downloads, filename)
    if os.path.isfile(path) and sha256_file(path) == digest:
        return path
    os.makedirs(downloads, exist_ok=True)
    log(f"  apt-get download {package}={version}")
    cmd = ["apt-get", "download", "-q", f"{package}={version}"]
    r = subprocess.run(cmd, cwd=downloads, capture_output=True, text=True)
    if r.returncode != 0 and os.geteuid() == 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        r = subprocess.run(cmd, cwd=downloads, capture_output=True, text=True)
    if r.returncode != 0:
        raise PhotoError(
            f"apt-get download {package}={version} failed: {r.stderr.strip()}\n"
            "  (needs Debian 12's package lists: run `apt-get update` as root)"
        )
    # apt names the file with the epoch escaped (4%3a...): normalise to the pool name.
    for f in os.listdir(downloads):
        if f.startswith(package + "_") and f.endswith(".deb") and f != filename and "%3a" in f:
            os.replace(os.path.join(downloads, f), path)
    if not os.path.isfile(path):
        raise PhotoError(f"apt-get download {package} did not produce {filename}")
    got = sha256_file(path)
    if got != digest:
        raise PhotoError(f"{filename}: sha256 {got}, expected {digest}")
    return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _data_tar(deb_path: str) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ``ar`` archive), opened for reading."""
    with open(deb_path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise PhotoError(f"{deb_path}: not a .deb")
        while True:
            header = f.read(60)
            if len(header) < 60:
                raise PhotoError(f"{deb_path}: no data.tar member")
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            body = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                if name.endswith(".xz"):
                    body = lzma.decompress(body)
                elif not name.endswith(".tar"):
                    raise PhotoError(f"{deb_path}: unsupported {name}")
                return tarfile.open(fileobj=io.BytesIO(body))


def deb_members(deb_path: str, wanted) -> dict[str, bytes]:
    """Files of the .deb whose path satisfies ``wanted(path)``, symlinks followed (wallpaper
    packages link one size to another)."""
    out = {}
    with _data_tar(deb_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name, m in members.items():
            if not wanted(name):
                continue
            for _ in range(8):
                if not m.issym():
                    break
                target = os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname))
                m = members.get("./" + target) or members.get(target)
                if m is None:
                    break
            if m is not None and m.isfile():
                out[name] = tar.extractfile(m).read()
    return out


def _is_photo_stamp(name: str, data: bytes) -> bool:
    import numpy as np
    from PIL import Image

    if not name.endswith(".png") or "/cartoon/" in name:
        return False
    img = Image.open(io.BytesIO(data))
    if min(img.size) < 100:
        return False
    a = np.asarray(img.convert("RGBA"))
    opaque = a[..., 3] > 250
    if opaque.sum() < 5000:
        return False
    rgb = a[opaque][:, :3].astype(np.uint32) @ np.array([65536, 256, 1], dtype=np.uint32)
    return np.unique(rgb).size >= 4000


def on_white(data: bytes) -> bytes:
    """A stamp with transparency flattened onto white, as PNG."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGBA")
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img)
    buf = io.BytesIO()
    bg.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()

