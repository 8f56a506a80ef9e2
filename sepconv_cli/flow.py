"""The classical motion prior: OpenCV DIS optical flow, and what it predicts at time t.

One implementation serves both ``eval --method flow`` (the flow baseline) and the flowsep
model, which starts from exactly that baseline and learns corrections to it.

Conventions: frames are (N, 3, H, W) float tensors in [0, 1]; a flow is (N, 2, H, W) in
pixels, channel 0 = dx, channel 1 = dy; ``f01`` maps a pixel of frame 0 to where it is in
frame 1 (``f10`` back). ``t`` is the time of the wanted frame, 0 = frame 0, 1 = frame 1,
as a float or an (N,) tensor.

The baseline at time t (Super SloMo's approximation of the flow from t to the inputs,
Jiang et al. 2018, and a forward-backward consistency rule for occlusions):

    Ft0 = -(1-t)·t·F01 + t²·F10,   Ft1 = (1-t)²·F01 - t·(1-t)·F10
    W0 = I0 sampled at p0 = x + Ft0,  W1 = I1 sampled at p1 = x + Ft1 (bilinear, edges replicated)
    e0 = |p0 + F01(p0) - p1|,  e1 = |p1 + F10(p1) - p0|
    w0 = (1-t)·[p0 inside] / (1 + e0²),  w1 = t·[p1 inside] / (1 + e1²)
    out = (w0·W0 + w1·W1) / (w0 + w1)    ((1-t)·W0 + t·W1 where both weights vanish)

At t = 0.5 the time factors cancel and this is the rule ``eval --method flow`` has always
used. ``splat`` adds the other way of compensating motion, forward splatting, which fails
in different places (it keeps thin moving objects that backward warping tears, but
leaves holes): the network gets both.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sepconv_cli.ext.separable_conv import Extension, select_extension
from sepconv_cli.motion_types import Neighbours, Surroundings

__all__ = [
    "BatchGreys",
    "FlowMemo",
    "FlowPrior",
    "Grey",
    "Neighbours",
    "Surroundings",
    "baseline",
    "dis_flows",
    "flow_prior",
    "greys",
    "intermediate_flows",
    "neighbour_flows",
    "quadratic_flows",
    "splat",
    "splat_reference",
    "warp",
]

# DIS runs on a copy no wider than this: at 1080p and above the flow of a half-size copy
# (scaled back up) is as good for the prior and 4x cheaper.
MAX_FLOW_WIDTH = 1280

_local = threading.local()
_log = logging.getLogger(__name__)

SPLAT_KERNELS = {"cpu": Extension("sepconv_splat_cpu", ("splat_cpu.cpp",))}


# Sizes whose DIS instance a thread keeps (tiles, a clip's size, its half-size copy).
_DIS_SIZES = 4


def _dis(shape: tuple[int, ...]):  # noqa: ANN202 - cv2.DISOpticalFlow
    """A DIS instance for images of ``shape``, one per thread and size.

    Per thread: OpenCV's objects are not safe to share across threads. Per size: an
    instance that has seen a smaller image gives (slightly) different flows afterwards on a
    larger one (OpenCV 4.x keeps state from the earlier call), so a flow would depend on what
    ran before it in that thread; an instance only ever used on one size gives what a fresh
    one gives.
    """
    import cv2

    kept = getattr(_local, "dis", None)
    if kept is None:
        kept = _local.dis = OrderedDict()
    key = tuple(shape[:2])
    if key in kept:
        kept.move_to_end(key)
    else:
        kept[key] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        while len(kept) > _DIS_SIZES:
            kept.popitem(last=False)
    return kept[key]


def dis_flows(grey0: np.ndarray, grey1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS flow (preset medium) both ways between two (H, W) uint8 grey images.

    Returns F01 and F10 as (H, W, 2) float32 (dx, dy) in pixels of the given images.
    """
    dis = _dis(grey0.shape)
    return dis.calc(grey0, grey1, None), dis.calc(grey1, grey0, None)


def _grey(frames: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] → (N, H, W) uint8, OpenCV's RGB→grey weights."""
    import cv2

    # In place after clamp's copy, and the planes interleaved by cv2.merge: a fresh 11 MB
    # temporary per step and numpy's strided HWC copy were 3/4 of the time at 720p.
    planes = frames.detach().float().clamp(0, 1).mul_(255).round_().to(torch.uint8).cpu().numpy()
    return np.stack([cv2.cvtColor(cv2.merge(list(image)), cv2.COLOR_RGB2GRAY) for image in planes])


def flow_prior(frame0: Tensor, frame1: Tensor, max_width: int = MAX_FLOW_WIDTH,
               both: bool = True) -> tuple[Tensor, Tensor | None]:
    """F01 and F10 of two (N, 3, H, W) batches, each (N, 2, H, W) float32 on the frames' device
    (F10 is None with ``both=False``: half the DIS work where one direction is enough).

    Frames wider than ``max_width`` are halved (repeatedly) before DIS and the flow is
    scaled back up, bilinearly, with its vectors multiplied by the same factor.
    """
    grey0, grey1 = _grey(frame0), _grey(frame1)
    forward = [_one_way(a, b, max_width) for a, b in zip(grey0, grey1)]
    backward = [_one_way(b, a, max_width) for a, b in zip(grey0, grey1)] if both else None
    return (_flow_tensor(forward, frame0.device),
            _flow_tensor(backward, frame0.device) if backward is not None else None)


def _flow_tensor(flows: list[np.ndarray], device: torch.device) -> Tensor:
    """OpenCV (H, W, 2) flows as one (N, 2, H, W) tensor on ``device``."""
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous().to(device)


def _time(t: float | Tensor, like: Tensor) -> Tensor:
    """``t`` as an (N, 1, 1, 1) tensor matching ``like``'s batch, dtype and device."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1, 1, 1).expand(like.shape[0], 1, 1, 1)


def intermediate_flows(f01: Tensor, f10: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """Flows from time t back to frame 0 and on to frame 1 (Super SloMo's linear-motion approximation)."""
    t = _time(t, f01)
    ft0 = -(1 - t) * t * f01 + t * t * f10
    ft1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
    return ft0, ft1


@dataclass(frozen=True)
class Grey:
    """One frame as DIS sees it: its (H, W) uint8 grey image and a hash of that image."""

    image: np.ndarray
    key: bytes


def greys(frames: Tensor) -> list[Grey]:
    """Each of (N, 3, H, W) frames in [0, 1] as a ``Grey``, for ``FlowMemo``."""
    import hashlib

    return [Grey(image, hashlib.blake2b(image.tobytes(), digest_size=16).digest()) for image in _grey(frames)]


@dataclass(frozen=True)
class BatchGreys:
    """The ``Grey`` of every frame of one four-frame call (``Interpolator.at``), by row:
    ``first``/``second`` the pair's, ``before``/``after`` the frames around it (None on rows
    whose neighbours do not count). A stream makes each frame's once and hands it to every
    call and prefetch that reads the frame, instead of each greying and hashing it again."""

    first: list[Grey]
    second: list[Grey]
    before: list[Grey | None]
    after: list[Grey | None]

    def rows(self, part: slice) -> BatchGreys:
        """The greys of the rows ``part`` of the batch, for a call on part of it."""
        return BatchGreys(self.first[part], self.second[part], self.before[part], self.after[part])


# A flow in the memo: source and target grey hashes, and the width DIS ran at.
_Key = tuple[bytes, bytes, int]

# The background thread's name (tests tell its DIS calls from the caller's by it).
PREFETCH_THREAD = "sepconv-flow"


class FlowMemo:
    """DIS flows between frames by content, the last ``size`` of them remembered.

    A stream's four-frame motion needs F(i→i−1) and F(i+1→i+2) beside the pair's own two
    flows, and those are the neighbouring pairs' own flows: remembered, every flow is
    computed once and four-frame motion costs no extra DIS. Frames are keyed by a hash of
    their grey image (about 1 ms at 720p, against 40 ms for one DIS call); the caller
    makes each frame's ``Grey`` once (``greys``) and uses it for every flow from or to it,
    since the grey conversion costs several times the hash.

    ``prefetch`` computes flows a later call will want in one background thread (started
    on the first prefetch, so a memo that is never told gets none): OpenCV releases the GIL
    in DIS, so the next pair's flows are computed while the caller runs this pair's
    network. Each flow is a ``Future`` claimed by whichever thread starts it first; the
    other waits for it, so no flow is computed twice. A prefetch that fails only means
    the caller computes that flow itself, as without it; the failure is logged, and
    should the caller fail too, its exception carries the prefetch's as its context.
    """

    def __init__(self, size: int = 12) -> None:
        self.size = size
        self._flows: dict[_Key, Future[np.ndarray]] = {}
        # How many prefetched uses each flow still has ahead: those are evicted last, so the
        # flows of later halvings (×4, ×8), never asked for again, cannot push them out.
        self._wanted: Counter[_Key] = Counter()
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._finalizer: weakref.finalize | None = None
        self._reported = False

    def __call__(self, sources: list[Grey], targets: list[Grey], device: torch.device | str = "cpu",
                 max_width: int = MAX_FLOW_WIDTH) -> Tensor:
        """The flow from each of ``sources`` to the matching ``targets``, (N, 2, H, W) on ``device``."""
        out = [self._flow(a, b, max_width) for a, b in zip(sources, targets, strict=True)]
        return _flow_tensor(out, torch.device(device))

    def prefetch(self, flows: Callable[[], Iterable[tuple[Grey, Grey]]], max_width: int = MAX_FLOW_WIDTH) -> None:
        """Compute the flows ``flows()`` names, (source, target) pairs, in the background
        thread for a later call to take. ``flows`` runs in that thread too, so the caller
        does not pay for making the greys of frames it will only need later."""
        with self._lock:
            if self._jobs is None:
                self._jobs, self._stop = queue.SimpleQueue(), threading.Event()
                self._worker = threading.Thread(target=_serve, args=(self._jobs,), name=PREFETCH_THREAD, daemon=True)
                self._worker.start()
                # The thread holds only its queue, so a memo nobody uses any more is collected
                # and the thread told to end.
                self._finalizer = weakref.finalize(self, self._jobs.put, None)
            self._jobs.put(partial(self._prefetch, flows, max_width, self._stop))

    def close(self) -> None:
        """End the background thread once the flow it is computing is done; prefetches not
        yet begun are dropped (their flows are computed when asked for). A later
        ``prefetch`` starts a new thread."""
        with self._lock:
            jobs, worker, finalizer = self._jobs, self._worker, self._finalizer
            self._jobs = self._worker = self._finalizer = None
            self._stop.set()
        if jobs is None or worker is None:
            return
        if finalizer is not None:
            finalizer.detach()
        while True:
            try:
                jobs.get_nowait()
            except queue.Empty:
                break
        jobs.put(None)
        worker.join()

    def _flow(self, a: Grey, b: Grey, max_width: int) -> np.ndarray:
        key = (a.key, b.key, max_width)
        with self._lock:  # one announced use taken
            if self._wanted[key] > 1:
                self._wanted[key] -= 1
            else:
                self._wanted.pop(key, None)
        while True:
            with self._lock:
                future = self._flows.get(key)
                earlier = _failure(future)
                mine = future is None or earlier is not None
                if mine:
                    future = self._claim(key)
            assert future is not None
            if mine:
                try:
                    return self._compute(key, future, a, b, max_width)
                except BaseException as error:
                    if earlier is not None and error.__context__ is None:
                        error.__context__ = earlier
                    raise
            try:
                return future.result()
            except Exception:  # noqa: BLE001 - the other thread failed: the loop computes it here
                continue

    def _prefetch(self, flows: Callable[[], Iterable[tuple[Grey, Grey]]], max_width: int,
                  stop: threading.Event) -> None:
        try:
            pairs = list(flows())
        except Exception as error:  # noqa: BLE001 - a prefetch only saves time: reported, not raised
            self._report(error)
            return
        with self._lock:
            # Room for these and for the flows of the call before them, still being taken.
            self.size = max(self.size, 2 * len(pairs))
        for a, b in pairs:
            if stop.is_set():
                return
            key = (a.key, b.key, max_width)
            with self._lock:
                self._wanted[key] += 1
                future = self._flows.get(key)
                if future is not None and _failure(future) is None:
                    continue  # computed, or being computed in the foreground
                future = self._claim(key)
            try:
                self._compute(key, future, a, b, max_width)
            except Exception as error:  # noqa: BLE001 - left in the future for the foreground
                self._report(error)

    def _claim(self, key: _Key) -> Future[np.ndarray]:
        """A running future for ``key``, stored (under the lock): the caller computes it."""
        future: Future[np.ndarray] = Future()
        future.set_running_or_notify_cancel()
        self._flows.pop(key, None)  # a failed one: the new one goes to the end, as the newest
        self._flows[key] = future
        excess = len(self._flows) - self.size
        if excess > 0:
            # Oldest first, flows a prefetch asked to keep last, and never one still being
            # computed (its thread or a waiting caller would find it gone).
            done = sorted((k for k, f in self._flows.items() if f.done()), key=lambda k: self._wanted[k] > 0)
            for old in done[:excess]:
                del self._flows[old]
                self._wanted.pop(old, None)
        return future

    def _compute(self, key: _Key, future: Future[np.ndarray], a: Grey, b: Grey, max_width: int) -> np.ndarray:
        try:
            flow = _one_way(a.image, b.image, max_width)
        except BaseException as error:
            future.set_exception(error)  # stays stored: whoever wants it next computes it again
            raise
        future.set_result(flow)
        return flow

    def _report(self, error: BaseException) -> None:
        # Once a memo as a warning, which the CLI shows; every one in the debug log.
        if not self._reported:
            self._reported = True
            _log.warning("computing a DIS flow ahead failed (%s: %s); such flows are computed when needed",
                         type(error).__name__, error)
        _log.debug("prefetched DIS flow failed", exc_info=error)


def _failure(future: Future[np.ndarray] | None) -> BaseException | None:
    """The exception of a finished, failed ``future``; None while it runs or once it succeeded."""
    if future is None or not future.done():
        return None
    return future.exception()


def _serve(jobs: queue.SimpleQueue) -> None:
    """The prefetch thread: run jobs until None. No job is held between two, so an idle
    thread keeps no memo alive."""
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            job()
        except BaseException:  # noqa: BLE001 - a job reports its own errors; this keeps the thread
            _log.exception("flow prefetch job failed")
        job = None


def _one_way(grey_a: np.ndarray, grey_b: np.ndarray, max_width: int) -> np.ndarray:
    """DIS from one (H, W) uint8 image to another, (H, W, 2), on a copy at most ``max_width`` wide."""
    import cv2

    height, width = grey_a.shape
    scale = 1
    while width // scale > max_width:
        scale *= 2
    if scale == 1:
        return _dis(grey_a.shape).calc(grey_a, grey_b, None)
    size = (max(1, width // scale), max(1, height // scale))
    a = cv2.resize(grey_a, size, interpolation=cv2.INTER_AREA)
    b = cv2.resize(grey_b, size, interpolation=cv2.INTER_AREA)
    flow = _dis(a.shape).calc(a, b, None)
    sx, sy = width / a.shape[1], height / a.shape[0]
    return cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32([sx, sy])


def neighbour_flows(before: Tensor, frame0: Tensor, frame1: Tensor, after: Tensor,
                    max_width: int = MAX_FLOW_WIDTH) -> Neighbours:
    """F(0→−1) and F(1→2) of four (N, 3, H, W) batches, evenly spaced, as ``Neighbours``."""
    f0m, _ = flow_prior(frame0, before, max_width, both=False)
    f12, _ = flow_prior(frame1, after, max_width, both=False)
    return Neighbours(f0m, f12, valid=torch.ones(frame0.shape[0], device=frame0.device))


def _spacing(value: float | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)


def quadratic_flows(
    f01: Tensor, f10: Tensor, f0m: Tensor, f12: Tensor, t: float | Tensor,
    before: float | Tensor = 1.0, after: float | Tensor = 1.0, valid: Tensor | None = None,
    prior: FlowPrior | None = None,
) -> tuple[Tensor, Tensor]:
    """Flows from time t to frames 0 and 1 under constant acceleration (Xu et al., NeurIPS 2019).

    ``f0m`` is the flow from frame 0 to the frame before it and ``f12`` from frame 1 to
    the frame after it; ``before``/``after`` are those frames' distances from frames 0
    and 1, in units of the 0→1 interval (1 for evenly spaced frames; the real timestamps
    otherwise). A pixel of frame 0 then follows x(τ) = v·τ + a·τ²/2 through x(1) = F01 and
    x(−before) = F0m, which puts it at t·F01 + c0·(t² − t) at time t, with
    c0 = (F0m + before·F01) / (before·(1 + before)); likewise from frame 1 backwards in
    time, s = 1 − t, c1 = (F12 + after·F10) / (after·(1 + after)). The displacement
    beyond linear motion, δ, is taken where the linear flows sample (a first-order
    inversion of the forward trajectory, as cheap as one warp):

        Ft0 = Ft0_linear − δ0(x + Ft0_linear),   Ft1 = Ft1_linear − δ1(x + Ft1_linear)

    At t = 0 and t = 1 this equals the linear flows, so the inputs come back exactly.
    ``valid`` ((N,) or (N, 1, 1, 1), 1 where both neighbours exist) zeroes the correction
    elsewhere: there the result is the linear flows. Returns (Ft0, Ft1), each (N, 2, H, W).

    ``prior``: the ``FlowPrior`` of these ``f01``, ``f10`` and ``t``, whose linear flows and
    sampling grids are then taken instead of computed again (FlowSep has it at hand).
    """
    t = _time(t, f01)
    if prior is None:
        ft0, ft1 = intermediate_flows(f01, f10, t)
        grid0, grid1 = _grid(_positions(ft0)), _grid(_positions(ft1))
    else:
        ft0, ft1, grid0, grid1 = prior.ft0, prior.ft1, prior.grid0, prior.grid1
    before, after = _spacing(before, f01), _spacing(after, f01)
    s = 1 - t
    delta0 = (f0m + before * f01) / (before * (1 + before)) * (t * t - t)
    delta1 = (f12 + after * f10) / (after * (1 + after)) * (s * s - s)
    if valid is not None:
        mask = valid.to(f01.dtype).reshape(-1, 1, 1, 1)
        delta0, delta1 = delta0 * mask, delta1 * mask
    return ft0 - _sample(delta0, grid0), ft1 - _sample(delta1, grid1)


def _positions(flow: Tensor) -> Tensor:
    """x + flow in pixels, (N, 2, H, W): what a warp samples at and ``_inside`` tests."""
    _, _, height, width = flow.shape
    ys = torch.arange(height, dtype=flow.dtype, device=flow.device).view(height, 1).expand(height, width)
    xs = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, width).expand(height, width)
    return flow + torch.stack([xs, ys])


def _grid(positions: Tensor) -> Tensor:
    """Pixel positions (N, 2, H, W) in grid_sample's normalised coordinates (align_corners=True).

    Returned as an (N, H, W, 2) view of (N, 2, H, W) planes: grid_sample reads a grid whose
    W axis is contiguous as fast as an interleaved one, and interleaving x and y (a
    torch.stack) cost more than the rest of the grid's arithmetic. In float32 the values are
    those of (x + flow)·2/(W - 1) - 1 computed per coordinate, bit for bit.
    """
    height, width = positions.shape[-2:]
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], dtype=positions.dtype,
                         device=positions.device).view(1, 2, 1, 1)
    return (positions * scale).sub_(1).permute(0, 2, 3, 1)


def _sample(image: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """``image`` sampled bilinearly at x + ``flow`` (backward warping), edges replicated."""
    return _sample(image, _grid(_positions(flow)))


def _length(vector: Tensor) -> Tensor:
    """|v| of (N, 2, H, W) vectors as (N, 1, H, W); hypot is 5x faster than norm over dim 1 here."""
    return torch.hypot(vector[:, :1], vector[:, 1:])


def _inside(positions: Tensor) -> Tensor:
    """1 where pixel positions (N, 2, H, W) lie inside the frame, as (N, 1, H, W)."""
    height, width = positions.shape[-2:]
    px, py = positions[:, 0], positions[:, 1]
    return ((px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)).unsqueeze(1).to(positions.dtype)


@torch.no_grad()
def splat(frame0: Tensor, frame1: Tensor, f01: Tensor, f10: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """Both frames splatted forward to time t, weighted by photometric consistency.

    Each pixel of frame 0 moves by t·F01 and each of frame 1 by (1-t)·F10; it is spread
    over the four pixels around where it lands (bilinear weights) with weight
    exp(-10·|I0 - I1(x + F01)|) (mean over channels), times (1-t) for frame 0 and t for
    frame 1, so where two pixels land on one, the one whose flow is consistent wins.
    Returns the normalised frame (N, 3, H, W) and the total weight per pixel (N, 1, H, W);
    where the weight is below 1e-3 (holes) the frame is 0.

    On the CPU a compiled kernel (``ext/csrc/splat_cpu.cpp``) does this in one pass per
    frame; the code below is its reference and runs everywhere else.
    """
    t = _time(t, frame0)
    if frame0.device.type == "cpu" and frame0.dtype in (torch.float32, torch.float64):
        extension = select_extension(SPLAT_KERNELS, frame0.device)
        if extension is not None:
            return extension.forward(frame0, frame1, f01.to(frame0.dtype), f10.to(frame0.dtype), t.reshape(-1).contiguous())
    return splat_reference(frame0, frame1, f01, f10, t)


@torch.no_grad()
def splat_reference(frame0: Tensor, frame1: Tensor, f01: Tensor, f10: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """``splat`` in PyTorch ops: the definition the compiled CPU kernel is tested against."""
    t = _time(t, frame0)
    n, c, height, width = frame0.shape
    total = torch.zeros(n * height * width, c + 1, dtype=frame0.dtype, device=frame0.device)
    ys = torch.arange(height, device=frame0.device).view(1, height, 1).expand(n, height, width)
    xs = torch.arange(width, device=frame0.device).view(1, 1, width).expand(n, height, width)
    batch = torch.arange(n, device=frame0.device).view(n, 1, 1).expand(n, height, width)
    for source, other, flow, factor, time_weight in ((frame0, frame1, f01, t, 1 - t), (frame1, frame0, f10, 1 - t, t)):
        error = (source - warp(other, flow)).abs().mean(1, keepdim=True)
        weight = torch.exp(-10 * error) * time_weight  # (N, 1, H, W)
        values = torch.cat([source * weight, weight], 1).permute(0, 2, 3, 1)  # (N, H, W, C+1)
        qx = xs + factor[:, 0] * flow[:, 0]
        qy = ys + factor[:, 0] * flow[:, 1]
        x0, y0 = qx.floor(), qy.floor()
        for dy in (0, 1):
            for dx in (0, 1):
                cx, cy = x0 + dx, y0 + dy
                bilinear = (1 - (qx - cx).abs()) * (1 - (qy - cy).abs())
                valid = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1) & (bilinear > 0)
                index = (batch * height + cy.clamp(0, height - 1).long()) * width + cx.clamp(0, width - 1).long()
                contribution = values * (bilinear * valid).unsqueeze(-1)
                total.index_add_(0, index.reshape(-1), contribution.reshape(-1, c + 1))
    total = total.view(n, height, width, c + 1).permute(0, 3, 1, 2)
    coverage = total[:, c:]
    image = torch.where(coverage > 1e-3, total[:, :c] / coverage.clamp_min(1e-3), torch.zeros_like(total[:, :c]))
    return image, coverage


class FlowPrior:
    """What the flow baseline computes at time t, kept for the network to refine.

    Attributes are (N, C, H, W) tensors: ``ft0``/``ft1`` the flows from t to the inputs,
    ``warped0``/``warped1`` the backward-warped inputs, ``weight0`` the baseline's
    normalised weight of ``warped0`` (``1 - weight0`` that of ``warped1``), ``error0``/
    ``error1`` the forward-backward errors in pixels, and ``t`` (N, 1, 1, 1). ``grid0``/
    ``grid1`` are where ``ft0``/``ft1`` sample, for ``grid_sample``: each is built once and
    serves every warp along its flow, here and in ``quadratic_flows``.
    """

    def __init__(self, frame0: Tensor, frame1: Tensor, f01: Tensor, f10: Tensor, t: float | Tensor) -> None:
        self.t = _time(t, frame0)
        self.ft0, self.ft1 = intermediate_flows(f01, f10, self.t)
        positions0, positions1 = _positions(self.ft0), _positions(self.ft1)
        self.grid0, self.grid1 = _grid(positions0), _grid(positions1)
        self.warped0, self.warped1 = _sample(frame0, self.grid0), _sample(frame1, self.grid1)
        p0_to_1 = _sample(f01, self.grid0)  # F01 where frame 0 was sampled
        p1_to_0 = _sample(f10, self.grid1)
        self.error0 = _length(self.ft0 + p0_to_1 - self.ft1)
        self.error1 = _length(self.ft1 + p1_to_0 - self.ft0)
        w0 = (1 - self.t) * _inside(positions0) / (1 + self.error0**2)
        w1 = self.t * _inside(positions1) / (1 + self.error1**2)
        total = w0 + w1
        self.weight0 = torch.where(total < 1e-6, (1 - self.t).expand_as(total), w0 / total.clamp_min(1e-6))

    def blend(self) -> Tensor:
        """The flow baseline's frame at time t, (N, 3, H, W), not clamped."""
        return self.weight0 * self.warped0 + (1 - self.weight0) * self.warped1


def baseline(frame0: Tensor, frame1: Tensor, t: float | Tensor = 0.5) -> Tensor:
    """``eval --method flow``: the DIS flow baseline's frame at time ``t`` (N, 3, H, W), not clamped."""
    f01, f10 = flow_prior(frame0, frame1)
    return FlowPrior(frame0, frame1, f01, f10, t).blend()
