"""The run folder's record of progress (rank 0 only): metrics.jsonl and .csv, curves.png,
the sample sheets, config.json and summary.json. Images are drawn with numpy and OpenCV
(no plotting library), and are skipped with one note where OpenCV is missing."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sepconv_cli.errors import OutputError
from sepconv_cli.training.averaging import snapshots
from sepconv_cli.training.checkpoints import _atomic_text
from sepconv_cli.training.config import Note


def _cv2() -> Any | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


class RunWriter:
    """Writes a run's files (rank 0 only): metrics, plots, samples, checkpoints, weights."""

    def __init__(self, run_dir: Path, fields: list[str], note: Note) -> None:
        self.run_dir = run_dir
        self.fields = ["kind", "step", "epoch", "time", "lr", "loss", *fields, "samples_per_s", "psnr", "ssim", "val_l1"]
        self.records: list[dict[str, Any]] = []
        self.note = note
        self._warned_no_cv2 = False
        try:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "samples").mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {run_dir} ({exc.strerror or exc})") from None

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        _atomic_text(self.run_dir / name, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")

    def reload_metrics(self, up_to_step: int) -> None:
        """On resume: keep the rows and snapshots up to the checkpoint's step (later ones are redone)."""
        for later in snapshots(self.run_dir, up_to_step + 1):
            later.unlink()
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(row, dict) and row.get("step", 0) <= up_to_step:
                    self.records.append(row)
        _atomic_text(path, "".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, row: dict[str, Any]) -> None:
        self.records.append(row)
        try:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {self.run_dir / 'metrics.jsonl'} ({exc.strerror or exc})") from None

    def flush_tables(self) -> None:
        """Rewrite metrics.csv and curves.png from the rows so far."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.records:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        _atomic_text(self.run_dir / "metrics.csv", buffer.getvalue())
        cv2 = self._images()
        if cv2 is not None:
            image = plot_curves(self.records)
            if not cv2.imwrite(str(self.run_dir / "curves.png"), image):
                raise OutputError(f"cannot write {self.run_dir / 'curves.png'}")

    def save_samples(self, epoch: int, rows: list[np.ndarray]) -> None:
        cv2 = self._images()
        if cv2 is None or not rows:
            return
        path = self.run_dir / "samples" / f"epoch_{epoch:03d}.png"
        if not cv2.imwrite(str(path), sample_sheet(rows)[..., ::-1]):
            raise OutputError(f"cannot write {path}")

    def _images(self) -> Any | None:
        cv2 = _cv2()
        if cv2 is None and not self._warned_no_cv2:
            self._warned_no_cv2 = True
            self.note("OpenCV is not installed: no curves.png or sample images (pip install opencv-python-headless)")
        return cv2


# --------------------------------------------------------------------------------------
# Images (numpy + OpenCV; no plotting library)


def sample_sheet(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of (4, S, S, 3) uint8 RGB images (frame 0, frame 1, prediction, truth) → one labelled RGB sheet."""
    cv2 = _cv2()
    size = rows[0].shape[1]
    gap = 4
    header = 18
    width = 4 * size + 3 * gap
    sheet = np.full((header + len(rows) * (size + gap), width, 3), 255, np.uint8)
    for col, label in enumerate(("frame 0", "frame 1", "prediction", "ground truth")):
        if cv2 is not None:
            (text_width, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            scale = 0.4 * min(1.0, (size - 4) / text_width)
            cv2.putText(sheet, label, (col * (size + gap) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    for r, row in enumerate(rows):
        top = header + r * (size + gap)
        for col in range(4):
            left = col * (size + gap)
            sheet[top : top + size, left : left + size] = row[col]
    return sheet


def plot_curves(records: list[dict[str, Any]], width: int = 960, height: int = 360) -> np.ndarray:
    """Training loss (log scale) and validation PSNR against the step, as a BGR image."""
    import cv2

    image = np.full((height, width, 3), 255, np.uint8)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    val = [(r["step"], r["psnr"]) for r in records if r.get("kind") == "val" and _finite(r.get("psnr"))]
    panels = (
        ("training loss (log scale)", [(s, math.log10(v)) for s, v in train if v > 0], (180, 90, 30), True),
        ("validation PSNR (dB)", val, (40, 40, 200), False),
    )
    half = width // 2
    for index, (title, points, colour, logarithmic) in enumerate(panels):
        x0, y0, x1, y1 = index * half + 60, 30, (index + 1) * half - 20, height - 40
        cv2.rectangle(image, (x0, y0), (x1, y1), (0, 0, 0), 1)
        cv2.putText(image, title, (x0, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        if not points:
            cv2.putText(image, "no data yet", (x0 + 10, (y0 + y1) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (120, 120, 120), 1, cv2.LINE_AA)
            continue
        steps = np.array([p[0] for p in points], float)
        values = np.array([p[1] for p in points], float)
        s_lo, s_hi = steps.min(), max(steps.max(), steps.min() + 1)
        v_lo, v_hi = values.min(), values.max()
        if v_hi - v_lo < 1e-9:
            v_lo, v_hi = v_lo - 0.5, v_hi + 0.5
        xs = x0 + (steps - s_lo) / (s_hi - s_lo) * (x1 - x0)
        ys = y1 - (values - v_lo) / (v_hi - v_lo) * (y1 - y0)
        line = np.stack([xs, ys], 1).round().astype(np.int32)
        if len(line) > 1:
            cv2.polylines(image, [line], False, colour, 1, cv2.LINE_AA)
        for point in line if len(line) <= 50 else line[-1:]:
            cv2.circle(image, tuple(int(v) for v in point), 2, colour, -1, cv2.LINE_AA)
        font = (cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
        top, bottom = (10**v_hi, 10**v_lo) if logarithmic else (v_hi, v_lo)
        cv2.putText(image, f"{top:.3g}", (x0 - 55, y0 + 10), *font)
        cv2.putText(image, f"{bottom:.3g}", (x0 - 55, y1), *font)
        cv2.putText(image, f"step {int(s_lo)}", (x0, y1 + 16), *font)
        cv2.putText(image, f"{int(s_hi)}", (x1 - 40, y1 + 16), *font)
    return image


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
