"""FlowSep on the CPU: the fused kernels against the PyTorch paths, or one revision's model code against another's.

    python benchmarks/flowsep_speed.py --sizes 720p,1080p --repeats 3
    python benchmarks/flowsep_speed.py --baseline main --sizes 720p --repeats 7 --threads 1
    python benchmarks/flowsep_speed.py --baseline HEAD~1 --candidate HEAD --sizes 720p   # one commit alone
    python benchmarks/flowsep_speed.py --baseline main --sizes 720p --e2e 7 --rounds 3 --threads 1

Without ``--baseline``, "before" runs the code paths the model had before the fused synthesis
and the compiled splat (``reference_synthesis()`` and ``flow.splat_reference``, the PyTorch
compositions that stay as the kernels' references); "after" the default ones.

With ``--baseline REV``, "before" is the code as committed at REV (``STREAM_FILES``: the
model, ``sepconv_cli/flow.py`` and ``sepconv_cli/models/flowsep.py``, and the stream around
it, the engine, schedules, pairing and pipeline; read with ``git show`` and loaded as modules
of their own, bound to each other, with the shipped weights), "after" the same files at
``--candidate`` (default: this tree). The model timing uses only the revisions' model code;
the end-to-end stream (``--e2e``) each revision's whole stream. Everything else (decoding,
encoding, the compiled kernels) is this tree's. The pair then comes with its neighbours
(four frames of a pan, their DIS flows), so the four-frame path runs as it does in a stream.
The two outputs must be bit-identical, or the run fails (``--tolerance`` to allow a difference).

Each repeat runs both on the same frames, one after the other, so a machine shared with
other jobs slows both alike: the ratio of the medians is the figure to read, absolute times
drift with the load. Both wall time and this process's CPU time (which waiting for a busy
core does not inflate) are reported. The flow prior (DIS) is computed once outside the timed
calls, as the engine does per pair, so this times the model: prior warps, splat, U-Net and
synthesis. ``--e2e N`` also streams an N-frame synthetic pan of the first size through
``pipeline.interpolate_video`` (decode, DIS, network, libx264) with each revision's code,
alternating for ``--rounds`` rounds, and reports the median interval per pair (the first
pair left out) and whether every new frame was the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sepconv_cli.ext.flowsep_synthesis import reference_synthesis  # noqa: E402
from sepconv_cli.flow import Neighbours, flow_prior, splat_reference  # noqa: E402
from sepconv_cli.models import flowsep as flowsep_module  # noqa: E402
from sepconv_cli.models.registry import default_weights, load_weights  # noqa: E402
from tests.media import make_video  # noqa: E402

# In import order, so that each file's imports of the others find the revision's; a file a
# revision does not have is left out (its other files do not import it).
STREAM_FILES = (
    "sepconv_cli/flow.py", "sepconv_cli/frame_cache.py", "sepconv_cli/models/flowsep.py", "sepconv_cli/neighbourhood.py",
    "sepconv_cli/schedules.py", "sepconv_cli/pairing.py", "sepconv_cli/engine.py", "sepconv_cli/pipeline.py",
)

SIZES = {"480p": (480, 848), "720p": (720, 1280), "1080p": (1088, 1920)}


def frames(height: int, width: int, count: int = 2) -> tuple[torch.Tensor, ...]:
    """A smooth colour pattern moved by ~12 px a frame (one frame back first when count is 4):
    content DIS can track."""
    ys = torch.linspace(0, 1, height).view(height, 1)
    xs = torch.linspace(0, 1, width).view(1, width)

    def frame(shift: float) -> torch.Tensor:
        x = xs + shift
        return torch.stack([
            0.5 + 0.5 * torch.sin(20 * x + 7 * ys), 0.5 + 0.5 * torch.cos(13 * ys + 9 * x * x), (x + ys) % 1,
        ]).unsqueeze(0)

    first = -1 if count == 4 else 0
    return tuple(frame(0.01 * k) for k in range(first, first + count))


def _git_show(revision: str, path: str) -> str | None:
    """The file at ``revision``, or None where it has none."""
    shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def _dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def revision_code(revision: str | None) -> dict[str, types.ModuleType]:
    """``STREAM_FILES`` of ``revision`` (None: this tree's) by module name, each one's imports of
    the others bound to the revision's; the rest of the package is this tree's."""
    if revision is None:
        found = [path for path in STREAM_FILES if (ROOT / path).exists()]
        return {_dotted(path): importlib.import_module(_dotted(path)) for path in found}
    sources = {path: text for path in STREAM_FILES if (text := _git_show(revision, path)) is not None}
    if STREAM_FILES[0] not in sources:
        raise SystemExit(f"{revision}: no {STREAM_FILES[0]} there (not a revision of this repository?)")
    tag = hashlib.sha1("".join(sources.values()).encode()).hexdigest()[:10]
    loaded: dict[str, types.ModuleType] = {}
    saved = {name: sys.modules.get(name) for name in map(_dotted, sources)}
    try:
        for path, source in sources.items():
            name = f"_rev_{tag}_{Path(path).stem}"
            module = types.ModuleType(name)
            module.__file__ = f"{revision}:{path}"
            sys.modules[name] = module  # dataclasses look their module up
            exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102
            loaded[_dotted(path)] = sys.modules[_dotted(path)] = module
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return loaded


def model_code(code: dict[str, types.ModuleType]) -> tuple[types.ModuleType, types.ModuleType]:
    """A revision's flow and flowsep modules."""
    return code["sepconv_cli.flow"], code["sepconv_cli.models.flowsep"]


def revision_model(module: types.ModuleType, weights: torch.nn.Module) -> torch.nn.Module:
    """``weights``' network built by ``module``'s FlowSep, channels_last as the engine runs it on the CPU."""
    config = module.FlowSepConfig(**dataclasses.asdict(weights.config))
    model = module.FlowSep(config)
    model.load_state_dict(weights.state_dict())
    return model.eval().to(memory_format=torch.channels_last)


def stream(code: dict[str, types.ModuleType], model: torch.nn.Module, clip: Path, out: Path) -> tuple[list[float], str]:
    """Seconds per pair (the first left out) and a digest of every new frame, for one run of a
    revision's engine and pipeline."""
    pipeline = code["sepconv_cli.pipeline"]
    interpolator = code["sepconv_cli.engine"].Interpolator(model, device="cpu")
    digest = hashlib.blake2b(digest_size=16)

    def midpoint(*args: object, **kwargs: object) -> torch.Tensor:
        output = interpolator.midpoint(*args, **kwargs)  # type: ignore[arg-type]
        digest.update(output.numpy().tobytes())
        return output

    midpoint.__self__ = interpolator  # type: ignore[attr-defined]  # the stream asks it for neighbours, prefetch
    marks: list[float] = []
    start = time.perf_counter()
    try:
        report = pipeline.interpolate_video(clip, out, midpoint, options=pipeline.VideoOptions(overwrite=True),
                                            progress=lambda done, total: marks.append(time.perf_counter()))
    finally:
        interpolator.close()
    pairs = report.input_frames - 1  # the last progress call is the unpaired last frame
    return [b - a for a, b in zip([start, *marks], marks)][:pairs][1:], digest.hexdigest()


@contextlib.contextmanager
def before() -> Iterator[None]:
    """The model's code paths before the fused kernels."""
    original = flowsep_module.splat
    flowsep_module.splat = splat_reference
    try:
        with reference_synthesis():
            yield
    finally:
        flowsep_module.splat = original


def time_greys(code: dict[str, dict[str, types.ModuleType]], size: tuple[int, int],
               repeats: int) -> float:
    """``flow.greys`` of one pair (what the engine makes per pair for DIS and the flow memo),
    each revision's, alternating; returns 0 when the grey images are equal, else inf."""
    a, b = frames(*size)
    pair = torch.cat([a, b])
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    images = {}
    for repeat in range(repeats + 1):
        for label in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
            wall, cpu = time.perf_counter(), time.process_time()
            images[label] = [grey.image for grey in code[label]["sepconv_cli.flow"].greys(pair)]
            if repeat:
                times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
    med = _medians(times)
    same = all((x == y).all() for x, y in zip(images["before"], images["after"], strict=True))
    click.echo(f"\nflow.greys of a {size[1]}x{size[0]} pair: before {med['before'][0] * 1e3:.1f} ms, after "
               f"{med['after'][0] * 1e3:.1f} ms, wall ratio {med['before'][0] / med['after'][0]:.2f}x, CPU ratio "
               f"{med['before'][1] / med['after'][1]:.2f}x, identical: {'yes' if same else 'NO'}")
    return 0.0 if same else float("inf")


def _medians(times: dict[str, list[tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


@click.command()
@click.option("--sizes", default="720p,1080p", show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="torch threads [default: torch's]")
@click.option("--baseline", help="git revision whose code (the model; with --e2e the stream too) is 'before' "
              "[default: the PyTorch compositions]")
@click.option("--candidate", help="git revision whose code is 'after' [default: this tree]")
@click.option("--tolerance", type=float, default=0.0, show_default=True,
              help="with --baseline: the largest difference of the outputs allowed")
@click.option("--e2e", type=click.IntRange(0), default=0, show_default=True,
              help="with --baseline: also stream an N-frame pan of the first size end to end")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="end-to-end rounds")
def main(sizes: str, repeats: int, threads: int | None, baseline: str | None, candidate: str | None,
         tolerance: float, e2e: int, rounds: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    weights = load_weights(default_weights("flowsep")).eval()
    if baseline is None:
        weights.to(memory_format=torch.channels_last)  # as the engine runs it on the CPU
        models = {"before": weights, "after": weights}
        contexts: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
            "before": before, "after": contextlib.nullcontext}
    else:
        code = {"before": revision_code(baseline), "after": revision_code(candidate)}
        models = {label: revision_model(model_code(modules)[1], weights) for label, modules in code.items()}
        contexts = {"before": contextlib.nullcontext, "after": contextlib.nullcontext}
        click.echo(f"before: {baseline}, after: {candidate or 'this tree'}; {torch.get_num_threads()} threads")
    click.echo("| size | before wall s | after wall s | wall ratio | before CPU s | after CPU s | CPU ratio | max diff |")
    click.echo("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name in sizes.split(","):
        height, width = SIZES[name]
        extra: dict[str, object] = {}
        if baseline is None:
            a, b = frames(height, width)
        else:
            before_a, a, b, after_b = frames(height, width, 4)
            (f0m, _), (f12, _) = flow_prior(a, before_a, both=False), flow_prior(b, after_b, both=False)
            extra["neighbours"] = Neighbours(f0m, f12, valid=torch.ones(1))
        flows = flow_prior(a, b)
        times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        outputs = {}
        with torch.inference_mode():
            for repeat in range(repeats + 1):  # the first round warms up
                for label in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
                    with contexts[label]():
                        wall, cpu = time.perf_counter(), time.process_time()
                        outputs[label] = models[label](a, b, None, t=0.5, flows=flows, **extra)
                        if repeat:
                            times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
        med = _medians(times)
        diff = float((outputs["before"].clamp(0, 1) - outputs["after"].clamp(0, 1)).abs().max())
        worst = max(worst, diff)
        click.echo(
            f"| {name} | {med['before'][0]:.2f} | {med['after'][0]:.2f} | {med['before'][0] / med['after'][0]:.2f}x "
            f"| {med['before'][1]:.2f} | {med['after'][1]:.2f} | {med['before'][1] / med['after'][1]:.2f}x | {diff:.1e} |"
        )
    if baseline is not None:
        worst = max(worst, time_greys(code, SIZES[sizes.split(",")[0]], repeats))
    if baseline is not None and e2e:
        height, width = SIZES[sizes.split(",")[0]]
        intervals: dict[str, list[float]] = {"before": [], "after": []}
        digests: dict[str, set[str]] = {"before": set(), "after": set()}
        with tempfile.TemporaryDirectory() as folder:
            clip = make_video(Path(folder) / "in.mp4", frames=e2e, width=width, height=height, audio=False)
            for round_ in range(rounds):
                for label in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                    seconds, digest = stream(code[label], models[label], clip, Path(folder) / "out.mp4")
                    intervals[label] += seconds
                    digests[label].add(digest)
                    click.echo(f"e2e round {round_ + 1} {label}: {', '.join(f'{s:.3f}' for s in seconds)} s/pair", err=True)
        off, on = statistics.median(intervals["before"]), statistics.median(intervals["after"])
        same = len(digests["before"] | digests["after"]) == 1
        click.echo(f"\ne2e {width}x{height}, {e2e} frames: before {off:.3f} s/pair, after {on:.3f} s/pair "
                   f"(medians of {len(intervals['before'])}), ratio {off / on:.2f}x, new frames identical: "
                   f"{'yes' if same else 'NO'}")
        if not same and tolerance == 0:
            raise SystemExit("the end-to-end outputs differ")
    if baseline is not None and worst > tolerance:
        raise SystemExit(f"the outputs differ by {worst:.1e} (> --tolerance {tolerance})")


if __name__ == "__main__":
    main()
