"""``eval --adapt``: a model adapted to each sample before it is scored there.

The adaptation (``sepconv_cli.adaptation.adapt``) sees only what the method is given:
``input_frames`` walks a sample's triplets and yields their two input frames, never the
ground truth, so on the ``video`` benchmark it learns from the even frames and is scored
on the odd ones, exactly as a user's run would learn from the frames it interpolates.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from sepconv_cli.adaptation import AdaptOptions, AdaptResult, adapt
from sepconv_cli.errors import InputError
from sepconv_cli.evaluation.benchmarks import Sample, Triplet
from sepconv_cli.evaluation.methods import ModelMethod
from sepconv_cli.evaluation.runner import _safe


def input_frames(sample: Sample) -> Iterator[np.ndarray]:
    """The distinct input frames of ``sample``'s triplets, in order (a frame shared by two
    neighbouring triplets once). The ground truth is never read out of a triplet."""
    previous: np.ndarray | None = None
    items = sample.read()
    try:
        for item in items:
            if not isinstance(item, Triplet):
                continue
            for frame in (item.first, item.second):
                if previous is None or frame.shape != previous.shape or not np.array_equal(frame, previous):
                    yield frame
                    previous = frame
    finally:
        close = getattr(items, "close", None)
        if close:
            close()


class AdaptedMethod(ModelMethod):
    """``base`` (a ``ModelMethod`` whose weights file is ``weights``) adapted to every sample
    in ``begin_sample``; named ``<base>+adapt``. ``results`` holds each sample's
    ``AdaptResult``; ``note`` receives a line per sample; ``keep_in``: a folder where each
    sample's adapted weights are written (``<sample>.<name>.pt``), and those it tried but
    did not use (``<sample>.<name>.tried.pt``)."""

    def __init__(self, base: ModelMethod, weights: Path, options: AdaptOptions,
                 note: Callable[[str], None] | None = None, keep_in: Path | None = None) -> None:
        super().__init__(f"{base.name}+adapt", base.interpolator, tta=base.tta, model=base.model)
        self.base = base
        self.weights = Path(weights)
        self.options = options
        self.note = note or (lambda text: None)
        self.results: dict[str, AdaptResult] = {}
        self.keep_in = keep_in

    def begin_sample(self, sample: Sample) -> None:
        from sepconv_cli.engine import Interpolator
        from sepconv_cli.models.registry import load_weights

        self.note(f"{sample.name}: adapting {self.base.name} to its input frames "
                  f"(up to {self.options.budget:.0f} s)")
        try:
            with tempfile.TemporaryDirectory(prefix="sepconv-adapt-") as work:
                result = adapt(input_frames(sample), self.weights, Path(work), self.options, model=self.model,
                               device=str(self.base.interpolator.device))
                network = load_weights(result.weights)
                if self.keep_in is not None:  # e.g. to look at its frames later (benchmarks/side_by_side.py)
                    self.keep_in.mkdir(parents=True, exist_ok=True)
                    kept = self.keep_in / f"{_safe(sample.name)}.{self.name}.pt"
                    shutil.copyfile(result.weights, kept)
                    result.weights = kept
                    if result.tried is not None and not result.adapted:
                        # What the held-out windows turned down, to be scored at run time too:
                        # how well they choose is measured, not assumed.
                        tried = self.keep_in / f"{_safe(sample.name)}.{self.name}.tried.pt"
                        shutil.copyfile(result.tried, tried)
                        result.tried = tried
        except InputError as exc:
            self.note(f"{sample.name}: {self.name} is {self.base.name} unchanged here: {exc}")
            self.interpolator = self.base.interpolator
            return
        base = self.base.interpolator
        self.interpolator = Interpolator(network, device=str(base.device), precision=base.precision)
        self.results[sample.name] = result
        self.note(f"{sample.name}: {self.name}: {result.summary()}")


def adapted_methods(methods: list, options: AdaptOptions,  # noqa: ANN001 - evaluation.methods.Method
                    note: Callable[[str], None] | None = None, keep_in: Path | None = None) -> list[AdaptedMethod]:
    """An ``AdaptedMethod`` for every any-time model method of ``methods`` that came from a
    weights file; raises ``SepconvError`` when there is none."""
    from sepconv_cli.errors import SepconvError

    found = [AdaptedMethod(m, m.weights, options, note, keep_in) for m in methods
             if isinstance(m, ModelMethod) and m.any_time and m.weights is not None]
    if not found:
        raise SepconvError("--adapt adapts any-time models (flowsep): name one with --method or --weights")
    return found
