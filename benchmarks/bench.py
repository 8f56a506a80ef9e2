"""How fast sepconv interpolates, on one device, at 480p to 2160p, next to FFmpeg's minterpolate.

    python benchmarks/bench.py                                  # CPU or the first GPU, random init
    python benchmarks/bench.py --model flowsep --weights weights/flowsep.pt
    python benchmarks/bench.py --device cuda --precision bf16 --frames 20 --json gpu.json
    python benchmarks/bench.py --device cpu --frames 480p=3,720p=3,1080p=1,2160p=0
    python benchmarks/bench.py --sizes 448x256 --frames 3 --no-e2e --no-ffmpeg --channels-last

For every size, in one run:

- **network-only**: ``Interpolator.midpoint`` on two random frames (padding, tiling and the
  host↔device copies included, since a caller pays them), ``--warmup`` calls first, then
  ``--frames`` timed calls; the median is reported. For flowsep this includes the flow
  prior, which the engine computes once per frame pair: OpenCV DIS both ways on the CPU
  (``sepconv_cli.flow.flow_prior``), then, inside the model, the backward warps, the
  forward-backward errors and the forward splat.
- **flow prior** (flowsep only): ``sepconv_cli.flow.flow_prior`` alone on the same two
  frames (grey conversion, DIS both ways, resizing above 1280 px wide, copies to and from
  the device), median of up to 3 calls after one warm-up, and its share of the
  network-only median. The warps and the splat are not in it (they run inside the model).
- **end-to-end**: ``pipeline.interpolate_video`` (decode → cut detection → model → encode with
  libx264 crf 18, preset medium) on a synthetic pan of ``frames + 1`` frames
  (``tests/media.make_video``) or on ``--clip``. Its per-frame time is the median interval
  between the pipeline's progress calls, one per frame pair; its frames/s counts new
  (interpolated) frames over the whole call.
- **memory**: peak RSS (Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``,
  so each phase is measured alone; elsewhere the process-lifetime ``ru_maxrss``) and, on
  CUDA, ``torch.cuda.max_memory_allocated``.
- **minterpolate**: the same clip through PyAV's filter graph (decode → ``minterpolate=
  fps=2r:mi_mode=mci`` → libx264 crf 18, preset medium), median of 3 runs, and the ratio of
  sepconv's end-to-end frames/s to it. It emits 2N − 3 frames for N, so a synthetic clip
  shorter than 5 frames is rendered again, longer, for it (the same pan).
- **FLOPs**: the network's, counted by ``torch.utils.flop_counter.FlopCounterMode`` on the
  meta device (no arithmetic runs) for every tile the engine cuts the frame into, plus the
  local convolution the counter cannot see: 2·k²·C·H·W per input frame for SepConv's
  separable op (k² multiply-adds per output value), 10·n²·C·H·W per input frame for
  DSepConv's deformable op (4 bilinear multiply-adds and 1 weight multiply-add per tap).
  For flowsep the counter runs ``model.head(model.unet(features))`` on a meta tensor of the
  feature stack ``FlowSep.forward`` builds (23 channels at the tile's size): its forward
  calls OpenCV and cannot run on meta. Those are all of its convolutions; its deformable op
  is counted like DSepConv's (n = its ``kernel_size``, 3 by default). **The flow prior (DIS,
  warps, splat) is not counted in FLOPs, but it is in the timings**, so flowsep's
  achieved GFLOP/s and "% of peak" understate what its network alone reaches.
  "% of peak" divides the executed FLOPs per second by the device's practical peak: the
  median GFLOP/s of a large matrix product in the run's precision, measured here.
- **local-conv share**: the op alone, timed on random inputs of the same tile sizes (both
  frames), as a fraction of the network-only median. flowsep's op is its fused synthesis
  (``sepconv_cli.ext.flowsep_synthesis``: both frames' deformable convolutions from the
  half-resolution head, their normalisation and the blend, in one call), on a random head in
  the network's layout and flows uniform in ±3 px rather than DIS flow.

flowsep's tiles carry a context that grows with the largest flow of the pair (the engine's
rule), so its tiles, FLOPs and times depend on the content: the tiles are recorded on the
same random frames that are timed, and the end-to-end run's pan has motion of its own. DIS
finds spurious motion in noise (about 15 px at 448×256, over 300 px at 2160p), far more
than most footage has, so flowsep's tiled sizes (2160p) are a pessimistic case here; the
note of a tiled size gives the flow that set its context (``flow_reach_px`` in the JSON).

``--frames N`` or ``--frames 480p=3,1080p=1,2160p=0``: 0 skips the timed parts of a size
(its FLOPs and tiling are still reported). Weights are random unless ``--weights`` is given:
speed does not depend on them. Tables go to stdout as Markdown, progress to stderr.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import click
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.media

from sepconv_cli.commands.train import parse_model_config
from sepconv_cli.engine import PRECISIONS, Interpolator, Tiling
from sepconv_cli.ext import OP_IMPLS, deformable_separable_conv, separable_conv
from sepconv_cli.ext import op_impl as use_op_impl
from sepconv_cli.models.registry import MODELS, build_model, load_weights
from sepconv_cli.pipeline import VideoOptions, interpolate_video
from sepconv_cli.video import probe
from tests.media import make_video

SIZES: dict[str, tuple[int, int]] = {
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "2160p": (3840, 2160),
}
MINTERPOLATE_FRAMES = 5  # at least this long a synthetic pan for minterpolate
ENCODER = {"codec": "libx264", "crf": 18, "preset": "medium"}  # VideoOptions' defaults, for both sides


def log(message: str) -> None:
    click.echo(message, err=True)


# -- measurement helpers ---------------------------------------------------------------


class PeakMemory:
    """Peak resident memory (and CUDA memory) since the last ``reset``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.per_phase = self._reset_rss()

    @staticmethod
    def _reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
            return True
        except OSError:
            return False

    def reset(self) -> None:
        self._reset_rss()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def rss_mb(self) -> float:
        if self.per_phase:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 / (1024 if sys.platform == "darwin" else 1)

    def gpu_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests so far (all CPUs; Linux), 0 elsewhere.

    A timed phase with much of it ran on a shared host and is slower than the machine is.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, precision: str, repeats: int = 5) -> float:
    """Median GFLOP/s of an n×n matrix product: the practical peak of ``device`` in ``precision``."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    # Size it to take about a second (at most 4096, 8192 on CUDA): emulated bf16 on a
    # CPU without AVX512-BF16/AMX runs ~1 GFLOP/s, where 4096² would take minutes.
    probe_n = 512
    a = torch.randn(probe_n, probe_n, device=device, dtype=dtype)
    torch.mm(a, a)
    sync(device)
    start = time.perf_counter()
    torch.mm(a, a)
    sync(device)
    rate = 2 * probe_n**3 / max(time.perf_counter() - start, 1e-9)
    n = int(min(8192 if device.type == "cuda" else 4096, max(probe_n, rate ** (1 / 3))) // 256 * 256)
    # fp32 convolutions on CUDA may run in TF32 (cudnn.allow_tf32, on by default): measure
    # the matmul under the same rule, so the peak is the one the network can reach.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for index in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if index:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * n**3 / statistics.median(times) / 1e9


def random_frames(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random (1, 3, H, W) frames in [0, 1], on the CPU."""
    return torch.rand(1, 3, height, width), torch.rand(1, 3, height, width)


def tile_shapes(
    interpolator: Interpolator, height: int, width: int,
    frames: tuple[torch.Tensor, torch.Tensor] | None = None, flow_reach: list[float] | None = None,
) -> list[tuple[int, int]]:
    """The (H, W) of every network call ``interpolator`` makes for one frame of this size.

    Runs the engine's own padding and tiling with the network replaced by zeros, so the
    shapes are exactly the ones a real call uses. ``frames`` (default: zeros) matter only
    for models with a flow prior, whose tile context grows with the largest flow; the
    largest flow component (px) the calls got is appended to ``flow_reach`` when given.
    """
    shapes: list[tuple[int, int]] = []
    reach = 0.0
    recorder = copy.copy(interpolator)

    def record(frame1: torch.Tensor, frame2: torch.Tensor, stats: Any, extra: dict[str, object]) -> torch.Tensor:
        nonlocal reach
        shapes.append(tuple(frame1.shape[-2:]))
        for flow in extra.get("flows", ()):  # type: ignore[union-attr]
            if flow.numel():
                reach = max(reach, float(flow.abs().amax()))
        return torch.zeros_like(frame1)

    recorder._run = record  # type: ignore[method-assign]
    if frames is None:
        zeros = torch.zeros(1, 3, height, width)
        frames = (zeros, zeros)
    recorder.midpoint(*frames)
    if flow_reach is not None:
        flow_reach.append(reach)
    return shapes


def flowsep_feature_channels(model: torch.nn.Module) -> int:
    """Channels of the feature stack FlowSep.forward feeds its U-Net (23: I0, I1, W0, W1,
    splat, e0, e1, coverage, t, Ft0, Ft1), read from the U-Net's first convolution."""
    return next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d)).in_channels


def network_gflop(model: torch.nn.Module, shapes: list[tuple[int, int]]) -> float:
    """GFLOP of the network's counted ops (convolutions, matmuls) over these calls, on meta.

    flowsep's forward runs OpenCV on the frames, which meta tensors cannot give it: its
    convolutions (U-Net and head) are counted on the feature stack's shape instead; the
    flow prior's warps and splat have no convolutions or matmuls, so the count is the same.
    """
    meta = copy.deepcopy(model).to("meta")
    total = 0
    for (height, width), count in Counter(shapes).items():
        counter = FlopCounterMode(display=False)
        if model.name == "flowsep":
            features = torch.zeros(1, flowsep_feature_channels(model), height, width, device="meta")
            with counter, torch.no_grad():
                meta.head(meta.unet(features))
        else:
            frame = torch.zeros(1, 3, height, width, device="meta")
            with counter, torch.no_grad():
                meta(frame, frame)
        total += counter.get_total_flops() * count
    return total / 1e9


def op_gflop(model: torch.nn.Module, shapes: list[tuple[int, int]]) -> float:
    """GFLOP of the local convolution (both input frames), which the counter does not see.

    SepConv: 2·k² per output value; DSepConv and flowsep (the same deformable op): 10·n².
    """
    k = model.config.kernel_size
    per_pixel_frame = 2 * k * k * 3 if model.name == "sepconv" else 10 * k * k * 3
    return sum(2 * per_pixel_frame * h * w for h, w in shapes) / 1e9


@torch.inference_mode()
def time_op(interpolator: Interpolator, shapes: list[tuple[int, int]], repeats: int) -> float:
    """Seconds the local convolution takes for one frame (both input frames, every tile), median.

    Inputs are random, in float32 (the op computes in float32 under autocast too); the
    per-pixel kernels are NHWC when the network is (its subnets then produce them so, while
    the frames stay NCHW), and the implementation is the one ``interpolator`` selects.
    flowsep's is its fused synthesis (``sepconv_cli.ext.flowsep_synthesis``: both frames'
    deformable convolutions, their normalisation and the blend, in one call) on a random
    half-resolution head in the network's layout, flows of ±3 px.
    """
    model, device = interpolator.model, interpolator.device
    k = model.config.kernel_size
    memory_format = torch.channels_last if interpolator.channels_last else torch.contiguous_format
    total = 0.0
    for (height, width), count in Counter(shapes).items():
        def rand(*size: int) -> torch.Tensor:
            return torch.rand(1, *size, device=device).contiguous(memory_format=memory_format)

        if model.name == "sepconv":
            args = (torch.rand(1, 3, height + k - 1, width + k - 1, device=device), rand(k, height, width), rand(k, height, width))
            op = separable_conv
        elif model.name == "flowsep":
            from sepconv_cli.ext.flowsep_synthesis import flowsep_synthesis, params_per_frame

            planes = [torch.rand(1, c, height, width, device=device) for c in (3, 3, 3, 2, 2, 1)]
            planes[3].sub_(0.5).mul_(6)
            planes[4].sub_(0.5).mul_(6)
            head = rand(2 * params_per_frame(k) + 3, height // 2, width // 2).sub_(0.5).mul_(0.2)
            args = (*planes, head, torch.ones(1, device=device), k)
            op = flowsep_synthesis
        else:  # dsepconv
            offsets = [rand(k * k, height, width).sub_(0.5).mul_(6) for _ in range(2)]
            args = (torch.rand(1, 3, height, width, device=device), rand(k, height, width), rand(k, height, width), *offsets, rand(k * k, height, width))
            op = deformable_separable_conv
        times = []
        for index in range(repeats + 1):
            sync(device)
            start = time.perf_counter()
            with use_op_impl(interpolator.op_impl):
                op(*args)
                if model.name != "flowsep":  # flowsep's op takes both frames at once
                    op(*args)  # the second input frame
            sync(device)
            if index:
                times.append(time.perf_counter() - start)
        total += statistics.median(times) * count
    return total


@torch.inference_mode()
def time_flow_prior(interpolator: Interpolator, frames: tuple[torch.Tensor, torch.Tensor], repeats: int) -> float:
    """Seconds ``sepconv_cli.flow.flow_prior`` takes for one pair of these frames, median.

    The frames are on the interpolator's device, as the engine passes them; one warm-up call.
    """
    from sepconv_cli.flow import flow_prior

    device = interpolator.device
    frame1, frame2 = (frame.to(device, torch.float32) for frame in frames)
    times = []
    for index in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        flow_prior(frame1, frame2)
        sync(device)
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_network(interpolator: Interpolator, height: int, width: int, repeats: int, warmup: int,
                 frames: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[float]:
    frame1, frame2 = frames or random_frames(height, width)
    if interpolator.device.type == "cuda":
        frame1, frame2 = frame1.pin_memory(), frame2.pin_memory()
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        interpolator.midpoint(frame1, frame2)  # returns a CPU tensor: synchronised
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def run_end_to_end(interpolator: Interpolator, clip: Path, out: Path) -> tuple[float, list[float], int, int]:
    """(seconds, per-pair seconds, interpolated frames, cuts) of ``interpolate_video`` on ``clip``."""
    marks: list[float] = []
    start = time.perf_counter()
    report = interpolate_video(
        clip, out, interpolator.midpoint,
        options=VideoOptions(overwrite=True, **ENCODER),
        progress=lambda done, total: marks.append(time.perf_counter()),
    )
    seconds = time.perf_counter() - start
    pairs = report.input_frames - 1  # the last progress call is the unpaired last frame
    intervals = [b - a for a, b in zip([start, *marks], marks)][:pairs]
    return seconds, intervals, pairs - report.cuts, report.cuts


def run_minterpolate(clip: Path, out: Path, factor: int = 2) -> tuple[float, int]:
    """(seconds, new frames) for FFmpeg's minterpolate: decode → filter → libx264, via PyAV.

    The filter emits frames on the output rate's grid from the first input's time, so
    every odd output frame is a new one. It stops one input pair short of the end (it
    needs a frame beyond a pair to estimate its motion): N inputs give 2N − 3 outputs.
    """
    start = time.perf_counter()
    frames_out = 0
    with av.open(str(clip)) as source, av.open(str(out), "w") as target:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.guessed_rate) * factor
        graph = av.filter.Graph()
        buffer = graph.add_buffer(template=stream)
        interpolate = graph.add("minterpolate", f"fps={rate}:mi_mode=mci")
        sink = graph.add("buffersink")
        buffer.link_to(interpolate)
        interpolate.link_to(sink)
        graph.configure()
        encoder = target.add_stream(ENCODER["codec"], rate=rate)
        encoder.width, encoder.height, encoder.pix_fmt = stream.width, stream.height, "yuv420p"
        encoder.codec_context.time_base = 1 / rate
        encoder.options = {"crf": str(ENCODER["crf"]), "preset": ENCODER["preset"]}

        def drain() -> None:
            nonlocal frames_out
            while True:
                try:
                    frame = graph.pull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return
                frame.pts, frame.time_base = frames_out, 1 / rate
                frame.pict_type = av.video.frame.PictureType.NONE
                target.mux(encoder.encode(frame))
                frames_out += 1

        for frame in source.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
        target.mux(encoder.encode(None))
    return time.perf_counter() - start, frames_out // 2


# -- results ---------------------------------------------------------------------------


@dataclass
class SizeResult:
    name: str
    width: int
    height: int
    tiles: int
    network_gflop: float
    op_gflop: float
    flow_reach_px: float | None = None  # flowsep: largest flow component of the random pair (sets tile context)
    frames: int = 0
    network_seconds: list[float] = field(default_factory=list)
    network_median_s: float | None = None
    network_fps: float | None = None
    executed_gflops: float | None = None
    fraction_of_peak: float | None = None
    op_seconds: float | None = None
    op_share: float | None = None
    flow_prior_seconds: float | None = None  # flowsep: sepconv_cli.flow.flow_prior alone
    flow_prior_share: float | None = None
    steal_network_s: float | None = None
    peak_rss_network_mb: float | None = None
    peak_gpu_network_mb: float | None = None
    e2e_seconds: float | None = None
    e2e_pair_seconds: list[float] = field(default_factory=list)
    e2e_median_s: float | None = None
    e2e_interpolated: int | None = None
    e2e_fps: float | None = None
    e2e_over_network: float | None = None
    peak_rss_e2e_mb: float | None = None
    peak_gpu_e2e_mb: float | None = None
    minterpolate_seconds: list[float] = field(default_factory=list)
    minterpolate_new_frames: int | None = None
    minterpolate_fps: float | None = None
    e2e_over_minterpolate: float | None = None
    note: str = ""


def environment(device: torch.device, precision: str, channels_last: bool) -> dict[str, Any]:
    cpu = ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or platform.processor(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        "torch": torch.__version__,
        "pyav": av.__version__,
        "ffmpeg_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": precision,
        "channels_last": channels_last,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None,
    }
    return info


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def gflop(value: float) -> str:
    """Whole GFLOP, or 3 significant digits below 10 (small networks such as flowsep's at 448×256)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def markdown(results: list[SizeResult], env: dict[str, Any], peak: float, cuda: bool, flow: bool = False) -> str:
    lines = [
        (f"{env['date']} · {env['gpu'] or env['cpu']} · {env['cores']} cores, {env['torch_threads']} torch threads · "
         f"torch {env['torch']} · {env['precision']}{' · channels_last' if env['channels_last'] else ''} · "
         f"practical peak {peak:.0f} GFLOP/s (matmul)"),
        "",
        "| size | tiles | network s/frame (n) | network fps | e2e s/frame (n) | e2e fps | e2e/network "
        "| peak RSS GB (net / e2e) |" + (" peak GPU GB |" if cuda else "") + " minterpolate fps | e2e fps ÷ minterpolate fps |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if cuda else "") + "---|---|",
    ]
    for r in results:
        rss = f"{fmt(r.peak_rss_network_mb and r.peak_rss_network_mb / 1024)} / {fmt(r.peak_rss_e2e_mb and r.peak_rss_e2e_mb / 1024)}"
        gpu = f" {fmt(r.peak_gpu_e2e_mb and r.peak_gpu_e2e_mb / 1024)} |" if cuda else ""
        lines.append(
            f"| {r.name} ({r.width}×{r.height}) | {r.tiles} | {fmt(r.network_median_s, '.3g')} ({len(r.network_seconds)}) "
            f"| {fmt(r.network_fps, '.3g')} | {fmt(r.e2e_median_s, '.3g')} ({len(r.e2e_pair_seconds)}) | {fmt(r.e2e_fps, '.3g')} "
            f"| {fmt(r.e2e_over_network, '.3f')} | {rss} |{gpu} {fmt(r.minterpolate_fps, '.3g')} "
            f"| {fmt(r.e2e_over_minterpolate, '.2g')} |"
        )
    lines += [
        "",
        ("| size | network GFLOP/frame (counted) | local-conv GFLOP | total GFLOP | achieved GFLOP/s | % of peak "
         "| local-conv s/frame | local-conv share |" + (" flow prior s/frame | flow prior share |" if flow else "")),
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if flow else ""),
    ]
    for r in results:
        flow_cells = (f" {fmt(r.flow_prior_seconds, '.3g')} | {fmt(r.flow_prior_share and 100 * r.flow_prior_share, '.1f', ' %')} |"
                      if flow else "")
        lines.append(
            f"| {r.name} | {gflop(r.network_gflop)} | {r.op_gflop:.1f} | {gflop(r.network_gflop + r.op_gflop)} "
            f"| {fmt(r.executed_gflops, '.1f')} | {fmt(r.fraction_of_peak and 100 * r.fraction_of_peak, '.0f', ' %')} "
            f"| {fmt(r.op_seconds, '.3g')} | {fmt(r.op_share and 100 * r.op_share, '.1f', ' %')} |{flow_cells}"
        )
    notes = [f"- {r.name}: {r.note}" for r in results if r.note]
    if flow:
        notes.append("- flow prior (DIS, warps, splat): not counted in FLOPs, included in every time; "
                     "flow prior s/frame is sepconv_cli.flow.flow_prior (DIS both ways) alone")
    return "\n".join(lines + ([""] + notes if notes else []))


# -- command line ----------------------------------------------------------------------


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item in SIZES:
            sizes.append((item, *SIZES[item]))
            continue
        width, sep, height = item.partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            raise click.BadParameter(f"'{item}' is neither one of {', '.join(SIZES)} nor WIDTHxHEIGHT", param_hint="--sizes")
        sizes.append((item, int(width), int(height)))
    return sizes


def parse_frames(text: str, sizes: list[tuple[str, int, int]]) -> dict[str, int]:
    if text.isdigit():
        return {name: int(text) for name, _, _ in sizes}
    frames: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise click.BadParameter(f"'{item}' is not SIZE=COUNT", param_hint="--frames")
        frames[name] = int(count)
    missing = [name for name, _, _ in sizes if name not in frames]
    if missing:
        raise click.BadParameter(f"no frame count for {', '.join(missing)}", param_hint="--frames")
    return frames


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", type=click.Choice(sorted(MODELS)), default="sepconv", show_default=True)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Weights file (default: random init).")
@click.option("--model-config", multiple=True, metavar="KEY=VALUE|JSON", help="Network size for random init, e.g. kernel_size=31.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--sizes", default="480p,720p,1080p,2160p", show_default=True, help="Names or WIDTHxHEIGHT, comma-separated.")
@click.option("--frames", default="3", show_default=True, help="Timed frames per size: N, or SIZE=N,... (0 = FLOPs only).")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="Untimed network calls per size.")
@click.option("--clip", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Video for end-to-end and minterpolate (whole clip; one size, the clip's) instead of a synthetic pan.")
@click.option("--tile", type=click.IntRange(0), default=Tiling.tile, show_default=True)
@click.option("--max-pixels", type=click.IntRange(1), default=Tiling.max_pixels, show_default=True)
@click.option("--op-impl", type=click.Choice(OP_IMPLS), default="auto", show_default=True)
@click.option("--channels-last/--no-channels-last", default=None,
              help="Network in channels_last (NHWC) [default: the engine's: on for the CPU, off on CUDA].")
@click.option("--threads", type=click.IntRange(1), help="torch CPU threads [default: the cores this process may use].")
@click.option("--no-e2e", is_flag=True, help="Skip the end-to-end and minterpolate runs.")
@click.option("--no-ffmpeg", is_flag=True, help="Skip minterpolate.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write every figure here.")
def main(
    model: str, weights: Path | None, model_config: tuple[str, ...], device: str, precision: str, sizes: str,
    frames: str, warmup: int, clip: Path | None, tile: int, max_pixels: int, op_impl: str, channels_last: bool | None,
    threads: int | None, no_e2e: bool, no_ffmpeg: bool, json_path: Path | None,
) -> None:
    """Benchmark sepconv's network and pipeline (see the module docstring)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads or cores)
    torch.manual_seed(0)
    network = load_weights(weights, model=model) if weights else build_model(model, parse_model_config(model_config))
    interpolator = Interpolator(network, device=device, precision=precision, op_impl=op_impl, channels_last=channels_last,
                                tiling=Tiling(tile=tile, context=Tiling.context, max_pixels=max_pixels))
    dev = interpolator.device
    size_list = parse_sizes(sizes)
    if clip is not None:
        info = probe(clip)
        size_list = [(clip.name, info.width, info.height)]
        if not frames.isdigit():
            raise click.BadParameter("with --clip give one number", param_hint="--frames")
    frame_counts = parse_frames(frames, size_list)
    env = environment(dev, precision, interpolator.channels_last)
    env.update(model=model, model_config=dict(vars(network.config)), weights=str(weights) if weights else "random init",
               tiling=asdict(interpolator.tiling), warmup=warmup)
    log(f"{env['cpu'] if dev.type == 'cpu' else env['gpu']}: {env['torch_threads']} threads, {model}, {precision}")
    peak = matmul_peak_gflops(dev, precision)
    log(f"practical peak: {peak:.1f} GFLOP/s ({precision} matmul)")
    memory = PeakMemory(dev)
    results = []

    needs_flow = bool(getattr(network, "needs_flow", False))
    with tempfile.TemporaryDirectory(prefix="sepconv-bench-") as tmp:
        for name, width, height in size_list:
            frames_in = random_frames(height, width)  # tiled and timed alike (flowsep's tiles depend on them)
            reach: list[float] = []
            shapes = tile_shapes(interpolator, height, width, frames_in, reach)
            result = SizeResult(name, width, height, len(shapes), network_gflop(network, shapes), op_gflop(network, shapes))
            if needs_flow:
                result.flow_reach_px = reach[0]
            if len(shapes) > 1:
                (th, tw), _ = Counter(shapes).most_common(1)[0]
                result.note = f"tiled: {len(shapes)} tiles (most {tw}×{th} with context) above max_pixels={interpolator.tiling.max_pixels}"
                if needs_flow:
                    result.note += f", context widened by the random pair's largest DIS flow, {reach[0]:.0f} px"
            count = frame_counts[name]
            results.append(result)
            if count == 0:
                result.note = "; ".join(filter(None, [result.note, "not timed (--frames 0)"]))
                log(f"{name}: {result.network_gflop + result.op_gflop:.0f} GFLOP/frame, not timed")
                continue
            result.frames = count
            log(f"{name}: {len(shapes)} network call(s), {result.network_gflop + result.op_gflop:.0f} GFLOP/frame; "
                f"{warmup} warm-up + {count} timed")
            memory.reset()
            steal = steal_seconds()
            result.network_seconds = time_network(interpolator, height, width, count, warmup, frames_in)
            result.steal_network_s = steal_seconds() - steal
            result.peak_rss_network_mb, result.peak_gpu_network_mb = memory.rss_mb(), memory.gpu_mb()
            result.network_median_s = statistics.median(result.network_seconds)
            result.network_fps = 1 / result.network_median_s
            result.executed_gflops = (result.network_gflop + result.op_gflop) / result.network_median_s
            result.fraction_of_peak = result.executed_gflops / peak
            log(f"  network {result.network_median_s:.3f} s/frame (runs: {', '.join(f'{t:.2f}' for t in result.network_seconds)}; "
                f"{result.steal_network_s:.1f} s CPU stolen by the host)")
            result.op_seconds = time_op(interpolator, shapes, repeats=min(count, 3))
            result.op_share = result.op_seconds / result.network_median_s
            log(f"  local conv {result.op_seconds:.3f} s/frame ({100 * result.op_share:.1f} %)")
            if needs_flow:
                result.flow_prior_seconds = time_flow_prior(interpolator, frames_in, repeats=min(count, 3))
                result.flow_prior_share = result.flow_prior_seconds / result.network_median_s
                log(f"  flow prior (DIS) {result.flow_prior_seconds:.3f} s/frame ({100 * result.flow_prior_share:.1f} %)")
            if no_e2e:
                continue
            source = clip or make_video(Path(tmp) / f"{name}.mp4", width=width, height=height, frames=count + 1)
            memory.reset()
            seconds, intervals, new_frames, cuts = run_end_to_end(interpolator, source, Path(tmp) / f"{name}.2x.mp4")
            result.peak_rss_e2e_mb, result.peak_gpu_e2e_mb = memory.rss_mb(), memory.gpu_mb()
            result.e2e_seconds, result.e2e_pair_seconds, result.e2e_interpolated = seconds, intervals, new_frames
            result.e2e_median_s = statistics.median(intervals)
            result.e2e_fps = new_frames / seconds
            result.e2e_over_network = result.e2e_median_s / result.network_median_s
            if cuts:
                result.note = "; ".join(filter(None, [result.note, f"{cuts} shot cut(s) not interpolated"]))
            log(f"  end-to-end {seconds:.2f} s for {new_frames} new frames (per pair: {', '.join(f'{t:.2f}' for t in intervals)})")
            if no_ffmpeg:
                continue
            if clip is None and count + 1 < MINTERPOLATE_FRAMES:
                # minterpolate emits 2N - 3 frames for N: too few to time on a 2-frame clip.
                source = make_video(Path(tmp) / f"{name}.long.mp4", width=width, height=height, frames=MINTERPOLATE_FRAMES)
            runs = [run_minterpolate(source, Path(tmp) / f"{name}.minterpolate.mp4") for _ in range(3)]
            result.minterpolate_seconds = [s for s, _ in runs]
            result.minterpolate_new_frames = runs[0][1]
            result.minterpolate_fps = result.minterpolate_new_frames / statistics.median(result.minterpolate_seconds)
            result.e2e_over_minterpolate = result.e2e_fps / result.minterpolate_fps if result.minterpolate_fps else None
            log(f"  minterpolate {result.minterpolate_fps:.2f} new frames/s")

    table = markdown(results, env, peak, dev.type == "cuda", flow=needs_flow)
    click.echo(table)
    if json_path is not None:
        payload = {"environment": env, "peak_gflops": peak, "sizes": [asdict(r) for r in results]}
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        log(f"wrote {json_path}")


if __name__ == "__main__":
    main()
