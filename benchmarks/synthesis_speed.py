"""FlowSep's fused synthesis op on the CPU: a baseline revision's kernel against this tree's, in one process.

    python benchmarks/synthesis_speed.py                       # 720p, 9 rounds, against 66e1c71
    python benchmarks/synthesis_speed.py --size 1080x1920 --rounds 15 --baseline HEAD~3

The baseline is ``csrc/flowsep_synthesis_cpu.cpp`` (and the shared header) as committed at
``--baseline``, compiled with the flags the package uses (``_build._cpu_flags``) under its own
operator namespace, since two libraries cannot register the same one; the default is the
last revision with the scalar forward. The candidate is the kernel this tree builds.

Inputs are ``benchmarks/bench.py``'s ``time_op`` ones for flowsep: float32 NCHW frames,
splat, flows uniform in ±3 px and weight, a half-resolution 69-channel head channels_last
(the network's layout) in ±0.1, gate 1, n = 3. Each round times the baseline then the
candidate on the same inputs (one warm-up call of each first), so a machine shared with
other jobs slows both alike: the ratio of the medians is the figure to read. Wall time and
this process's CPU time are both reported. The two outputs must agree to 1e-4.

In a second checkout (a git worktree), set ``TORCH_EXTENSIONS_DIR`` (``.ext-cache`` is ignored):
the candidate's build is named after the kernel, not its source, so in the shared default
cache it would replace the other checkout's build.
"""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import time
from pathlib import Path

import click
import torch

from sepconv_cli.ext._build import _build_directory, _cpu_flags, _cpu_tag
from sepconv_cli.ext.flowsep_synthesis import KERNELS, params_per_frame
from sepconv_cli.ext.separable_conv import select_extension

ROOT = Path(__file__).resolve().parents[1]
CSRC = "sepconv_cli/ext/csrc"
NAMESPACE = "sepconv_flowsep_synthesis_cpu"


def build_baseline(revision: str):
    """The baseline's forward, from ``git show revision:...``, as ``torch.ops.<namespace>.forward``."""
    def show(name: str) -> str:
        return subprocess.run(
            ["git", "show", f"{revision}:{CSRC}/{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    source, header = show("flowsep_synthesis_cpu.cpp"), show("flowsep_synthesis.h")
    digest = hashlib.sha1((source + header).encode()).hexdigest()[:10]
    namespace = f"{NAMESPACE}_baseline_{digest}"
    for macro in ("TORCH_LIBRARY", "TORCH_LIBRARY_IMPL"):
        assert f"{macro}({NAMESPACE}," in source, f"{revision}'s kernel does not register {NAMESPACE}"
        source = source.replace(f"{macro}({NAMESPACE},", f"{macro}({namespace},")
    from torch.utils.cpp_extension import load

    name = f"{namespace}_{_cpu_tag()}"
    # Sources in a fixed place, so a second run finds the build up to date instead of recompiling.
    directory = _build_directory(name) / "src"
    directory.mkdir(parents=True, exist_ok=True)
    for file, text in (("flowsep_synthesis_cpu.cpp", source), ("flowsep_synthesis.h", header)):
        if not (directory / file).exists() or (directory / file).read_text() != text:
            (directory / file).write_text(text)
    flags = _cpu_flags()
    load(
        name=name, sources=[str(directory / "flowsep_synthesis_cpu.cpp")], extra_cflags=flags,
        extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else None, is_python_module=False,
        build_directory=str(_build_directory(name)),
    )
    return getattr(torch.ops, namespace)


def inputs(height: int, width: int, taps: int = 3, seed: int = 0) -> tuple:
    """As bench.py's ``time_op`` builds flowsep's: frames NCHW, the head channels_last at half size."""
    torch.manual_seed(seed)
    planes = [torch.rand(1, c, height, width) for c in (3, 3, 3, 2, 2, 1)]
    planes[3].sub_(0.5).mul_(6)
    planes[4].sub_(0.5).mul_(6)
    head = torch.rand(1, 2 * params_per_frame(taps) + 3, height // 2, width // 2)
    head = head.contiguous(memory_format=torch.channels_last).sub_(0.5).mul_(0.2)
    return (*planes, head, torch.ones(1), taps)


@click.command()
@click.option("--size", default="720x1280", show_default=True, help="HEIGHTxWIDTH")
@click.option("--rounds", default=9, show_default=True, help="alternating baseline/candidate rounds")
@click.option("--baseline", default="66e1c71", show_default=True, help="git revision of the baseline kernel")
def main(size: str, rounds: int, baseline: str) -> None:
    height, width = (int(v) for v in size.lower().split("x"))
    old = build_baseline(baseline)
    new = select_extension(KERNELS, torch.device("cpu"))
    if new is None:
        raise click.ClickException("this tree's CPU kernel did not build")
    args = inputs(height, width)
    ops = {"baseline": old.forward, "candidate": new.forward}
    outputs = {name: op(*args) for name, op in ops.items()}  # the warm-up calls
    difference = (outputs["baseline"] - outputs["candidate"]).abs().max().item()
    wall: dict[str, list[float]] = {name: [] for name in ops}
    cpu: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            op(*args)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    click.echo(f"{height}x{width}, {torch.get_num_threads()} threads, {rounds} rounds, baseline {baseline}")
    for name in ops:
        click.echo(f"  {name:9s}  wall {statistics.median(wall[name]) * 1e3:8.1f} ms   "
                   f"cpu {statistics.median(cpu[name]) * 1e3:8.1f} ms   "
                   f"(wall min {min(wall[name]) * 1e3:.1f}, max {max(wall[name]) * 1e3:.1f})")
    ratio = statistics.median(wall["baseline"]) / statistics.median(wall["candidate"])
    cpu_ratio = statistics.median(cpu["baseline"]) / statistics.median(cpu["candidate"])
    click.echo(f"  speed-up   wall {ratio:.2f}x   cpu {cpu_ratio:.2f}x")
    click.echo(f"  max |baseline - candidate| = {difference:.3g}")
    if not difference <= 1e-4:
        raise click.ClickException("the two kernels disagree")


if __name__ == "__main__":
    main()
