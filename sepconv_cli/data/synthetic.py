"""Procedural training scenes with exactly known motion (the idea behind FlyingChairs).

A scene is a background photograph moved by a random camera motion (translation,
rotation, zoom, mild perspective) and 1..K foreground layers, each textured from
another photograph, cut out with a random soft-edged blob, and moved by its own
translation, rotation and zoom; later layers occlude earlier ones. The three frames at
t = 0, 0.5 and 1 are rendered from the same motion model, so the middle frame is the
true intermediate frame, not a blend, and occluded/disoccluded areas are correct.
``render(..., windows=True)`` adds the neighbours t = -1 and 2 from the same model; the
triplet frames stay exactly those of ``windows=False``.

Motion of a layer with pivot ``o`` (the canvas centre for the camera, the object centre
for a foreground layer), for a reference point ``q`` (its position at t = 0):

    p(t) = o + T(t) + P_t( exp(s1 t) R(theta1 t) (q - o) ),   T(t) = d t + 4 b t (1 - t)

``P_t`` is a perspective division with coefficients growing linearly in t (camera only).
``b`` bends the path (curved or accelerating motion: a constant acceleration -8 b) in
about half the layers, so the middle frame is not always where linear interpolation
would put it; every layer turns (theta1) a random share of its motion (all of it for the
15 % that only rotate and zoom). It holds for any t: the neighbours continue the path,
acceleration and turn. The parameters are
scaled so the largest displacement of the layer between t = 0 and t = 1 equals a target
drawn as ``max_motion * u**1.5`` (u uniform): magnitudes spread from 0 to ``max_motion``
(40 px at 150 px by default), small motions more frequent; ``static_fraction`` of the
scenes do not move at all.

Optional degradations, each drawn per scene (``effects=True``): a brightness change
linear in t, Gaussian noise, defocus blur and JPEG-like block-DCT quantisation, all
rendered with torch so a whole batch runs on the GPU when there is one.

Rendering is one ``torch.nn.functional.grid_sample`` call per batch on the photo bank
held as a single atlas (photos stacked vertically): each output pixel samples its
layer's photo at the mapped position, so no per-scene copies are made. Every random number of scene ``i`` comes
from ``numpy.random.default_rng([seed, i])``: a scene depends only on (photos, config,
seed, i), not on the batch it is rendered in. CPU and GPU results agree to float
rounding (not bit for bit).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sepconv_cli.data.degradations import gaussian_blur, jpeg_like
from sepconv_cli.errors import InputError
from sepconv_cli.images import IMAGE_SUFFIXES, read_image

TIMES = (0.0, 0.5, 1.0)
HARMONICS = 4  # shape of a foreground blob: radius r(phi) = R (1 + sum a_k cos(k phi + c_k))


@dataclass(frozen=True)
class SceneConfig:
    """What a synthetic scene may look like.

    ``size``: side of the square frames (px). ``max_motion``: largest displacement of any
    layer between t = 0 and t = 1 (px). ``max_layers``: foreground layers per scene are
    1..max_layers. ``static_fraction``: scenes with no motion at all.
    ``nonlinear_fraction``: layers with a curved/accelerating path. ``effects``: allow the
    degradations, each applied to a scene with its probability (``p_brightness`` ...).
    ``random_time``: the middle frame is rendered at a random time t (0.5 for 40 % of the
    scenes, else uniform in [0.05, 0.95]) instead of 0.5, for models that take any t.
    ``clean_target``: noise and JPEG only on the two input frames, not on the middle
    one, so the loss does not chase noise no model can predict.
    ``p_elastic``: share of scenes whose layers also deform non-rigidly, like foliage in
    wind or water: a smooth random displacement field (5×5 control points, up to about
    ``elastic_amplitude`` px) that oscillates in time (a sine of random frequency and
    phase), so the middle frame is not where linear motion puts it and a model learns
    when to hedge.
    """

    size: int = 150
    max_motion: float = 40.0
    max_layers: int = 3
    static_fraction: float = 0.05
    nonlinear_fraction: float = 0.5
    effects: bool = True
    p_brightness: float = 0.3
    p_noise: float = 0.3
    p_blur: float = 0.2
    p_jpeg: float = 0.3
    random_time: bool = False
    clean_target: bool = False
    p_elastic: float = 0.0
    elastic_amplitude: float = 6.0

    def check(self) -> None:
        if self.size < 8:
            raise InputError(f"scene size must be at least 8 px, got {self.size}")
        if self.max_motion < 0 or self.max_layers < 1:
            raise InputError("max_motion must be >= 0 and max_layers >= 1")


# --------------------------------------------------------------------------------------
# Photographs


class PhotoBank:
    """Photographs as one float tensor ``(1, 3, P, side, side)`` in [0, 1] on ``device``.

    Each photo is resized so its short side is ``side`` (area filter) and cut into
    ``round(long / short)`` square crops spread along its long side, so wide wallpapers
    give several textures. ``names`` has one entry per crop; ``skipped`` lists files that
    could not be read.
    """

    def __init__(self, volume: torch.Tensor, names: list[str], skipped: list[str]) -> None:
        self.volume = volume
        self.names = names
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.names)

    @property
    def fingerprint(self) -> str:
        """A short hash of the crop names and pixels' sums: changes when the photos do."""
        crc = zlib.crc32("\n".join(self.names).encode())
        sums = (self.volume[0].sum(dim=(0, 2, 3)) * 255).round().to(torch.int64).cpu().numpy()
        crc = zlib.crc32(sums.tobytes(), crc)
        return f"{crc:08x}"

    @classmethod
    def from_arrays(cls, images: Iterable[np.ndarray], side: int = 384, device: str | torch.device = "cpu",
                    names: list[str] | None = None) -> PhotoBank:
        """Build a bank from ``(H, W, 3)`` uint8 RGB arrays."""
        crops, crop_names = [], []
        for k, img in enumerate(images):
            base = names[k] if names else f"photo{k}"
            for j, crop in enumerate(_square_crops(img, side)):
                crops.append(crop)
                crop_names.append(f"{base}#{j}")
        if not crops:
            raise InputError("no usable photographs")
        arr = np.stack(crops)  # (P, side, side, 3)
        vol = torch.from_numpy(arr).to(device).permute(3, 0, 1, 2).unsqueeze(0).float().div_(255)
        return cls(vol.contiguous(), crop_names, [])

    @classmethod
    def from_folder(cls, folder: str | Path, side: int = 384, device: str | torch.device = "cpu") -> PhotoBank:
        """Every readable image under ``folder`` (recursively, in name order)."""

        folder = Path(folder)
        if not folder.exists():
            raise InputError(f"{folder} does not exist")
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder of photographs")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"no images found in {folder}")
        images, names, skipped = [], [], []
        for path in files:
            rgb = read_image(path)
            if rgb is None or min(rgb.shape[:2]) < 16:
                skipped.append(str(path))
                continue
            images.append(rgb)
            names.append(path.relative_to(folder).as_posix())
        if not images:
            raise InputError(f"none of the {len(files)} images in {folder} could be read")
        bank = cls.from_arrays(images, side, device, names)
        bank.skipped = skipped
        return bank


def _square_crops(img: np.ndarray, side: int) -> list[np.ndarray]:
    import cv2

    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 photo, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    img = cv2.resize(img, size, interpolation=interp)
    h, w = img.shape[:2]
    n = max(1, round(max(h, w) / side))
    crops = []
    for j in range(n):
        if w >= h:
            x = 0 if n == 1 else round(j * (w - side) / (n - 1))
            crops.append(img[:side, x : x + side])
        else:
            y = 0 if n == 1 else round(j * (h - side) / (n - 1))
            crops.append(img[y : y + side, :side])
    return [np.ascontiguousarray(c) for c in crops]


# --------------------------------------------------------------------------------------
# Scene parameters (numpy, float64)


def _motion_matrix(pivot: np.ndarray, d: np.ndarray, b: np.ndarray, rot: float, zoom: float,
                   persp: np.ndarray, t: float) -> np.ndarray:
    """3x3 homography taking reference (t = 0) canvas points to their position at ``t``."""
    c, s = np.cos(rot * t), np.sin(rot * t)
    z = np.exp(zoom * t)
    A = np.array([[z * c, -z * s, 0.0], [z * s, z * c, 0.0], [persp[0] * t, persp[1] * t, 1.0]])
    T = d * t + 4.0 * b * t * (1.0 - t)
    to_pivot = np.array([[1.0, 0, -pivot[0]], [0, 1.0, -pivot[1]], [0, 0, 1.0]])
    back = np.array([[1.0, 0, pivot[0] + T[0]], [0, 1.0, pivot[1] + T[1]], [0, 0, 1.0]])
    return back @ A @ to_pivot


def _max_displacement(motion: dict[str, Any], points: np.ndarray) -> float:
    M = _motion_matrix(t=1.0, **motion)
    ph = np.c_[points, np.ones(len(points))] @ M.T
    moved = ph[:, :2] / ph[:, 2:3]
    return float(np.abs(np.hypot(*(moved - points).T)).max())


def _scaled(motion: dict[str, Any], k: float) -> dict[str, Any]:
    return {**motion, "d": motion["d"] * k, "b": motion["b"] * k, "rot": motion["rot"] * k,
            "zoom": motion["zoom"] * k, "persp": motion["persp"] * k}


def _sample_motion(rng: np.random.Generator, pivot: np.ndarray, points: np.ndarray, target: float,
                   nonlinear: bool, camera: bool, extent: float) -> dict[str, Any]:
    """Random motion whose largest displacement over ``points`` is ``target`` px.

    Shape first (direction, bend, rotation/zoom share; ``extent`` is the layer's radius),
    then scaled to the target: for small parameters displacement is nearly linear in them,
    so a few rescalings converge; the last one only ever shrinks.
    """
    ang = rng.uniform(0, 2 * np.pi)
    pure_turn = rng.random() < 0.15  # some layers only rotate/zoom
    d = np.zeros(2) if pure_turn else np.array([np.cos(ang), np.sin(ang)])
    w_rot, w_zoom = (1.0, 1.0) if pure_turn else (rng.uniform(0, 0.5), rng.uniform(0, 0.4))
    rot = rng.uniform(-1, 1) * w_rot / extent
    zoom = rng.uniform(-1, 1) * w_zoom / extent
    bend = rng.uniform(-0.3, 0.3, size=2) if nonlinear else np.zeros(2)
    b = bend * max(1.0, float(np.hypot(*d)))  # in units of the translation (or of 1 px)
    persp = rng.uniform(-1, 1, size=2) * 0.2 / extent**2 if camera and rng.random() < 0.3 else np.zeros(2)
    rng.random()  # reserved: keeps the stream stable if another shape parameter is added
    motion = {"pivot": pivot, "d": d, "b": b, "rot": rot, "zoom": zoom, "persp": persp}
    if target <= 0:
        return _scaled(motion, 0.0)
    for _ in range(4):
        m = _max_displacement(motion, points)
        if m <= 1e-9:
            return _scaled(motion, 0.0)
        motion = _scaled(motion, target / m)
    m = _max_displacement(motion, points)
    if m > target:
        motion = _scaled(motion, target / m)
    return motion


@dataclass
class _Scene:
    """All numbers of one scene: per layer (background first) and per time."""

    photo: np.ndarray  # (L,) int photo index, -1 = unused layer
    to_photo: np.ndarray  # (L, T, 3, 3) canvas pixel -> photo pixel (centres at integers)
    to_local: np.ndarray  # (L, T, 3, 3) canvas pixel -> layer-local reference coords
    shape: np.ndarray  # (L, 2 + 2 * HARMONICS): radius, softness, amplitudes, phases
    flow: np.ndarray  # (L, 3, 3) motion matrix t = 0 -> 1 (for the ground-truth flow)
    gain: np.ndarray  # (T,) brightness factor per frame
    noise: float  # Gaussian noise sigma (0..1 scale)
    blur: float  # defocus sigma in px (0 = none)
    jpeg: float  # JPEG quality 1..100 (0 = none)
    motion: float  # largest target displacement over the layers, px
    time: float = 0.5  # time of the middle frame
    times: tuple[float, ...] = TIMES  # of the T frames: 0, time, 1 [, -1, 2 with windows]
    steady: bool = True  # no layer's size changes by more than ``MAX_ZOOM`` per interval


def scene_time(seed: int, index: int, cfg: SceneConfig) -> float:
    """The middle frame's time of scene ``index`` (0.5 unless ``cfg.random_time``).

    Drawn from a stream of its own, so turning it on leaves every other number of the
    scene as it was.
    """
    if not cfg.random_time:
        return 0.5
    rng = np.random.default_rng([seed, index, 0x7131])
    return 0.5 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.95))


NEIGHBOUR_TIMES = (-1.0, 2.0)  # the frames one input interval before and after the pair
# Scaling a motion to its target saturates for a small shrinking layer (it cannot move its
# points further than its radius): its zoom grows until it is a point by t = 1 and would
# cover the frame at t = -1. Such scenes' neighbours (~2 % at the defaults) are flagged.
MAX_ZOOM = 2.0


def _sample_scene(rng: np.random.Generator, n_photos: int, side: int, cfg: SceneConfig,
                  middle: float = 0.5, windows: bool = False) -> _Scene:
    """Scene parameters at the times (0, middle, 1), and with ``windows`` also at
    ``NEIGHBOUR_TIMES`` (after them on the time axis): the same random numbers either way."""
    times = (0.0, middle, 1.0) + (NEIGHBOUR_TIMES if windows else ())
    S = cfg.size
    L = cfg.max_layers + 1
    half = (S - 1) / 2
    # Canvas pixel (j, i) has centred coordinates (j - half, i - half).
    grid = np.linspace(-half, half, 9)
    canvas_pts = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    static_scene = rng.random() < cfg.static_fraction
    n_fg = int(rng.integers(1, cfg.max_layers + 1))
    photo = np.full(L, -1)
    to_photo = np.tile(np.eye(3), (L, len(times), 1, 1))
    to_local = np.tile(np.eye(3), (L, len(times), 1, 1))
    flow = np.tile(np.eye(3), (L, 1, 1))
    shape = np.zeros((L, 2 + 2 * HARMONICS))
    largest, steady = 0.0, True
    for layer in range(1 + n_fg):
        camera = layer == 0
        photo[layer] = int(rng.integers(n_photos))
        if not camera and n_photos > 1 and photo[layer] == photo[0]:
            photo[layer] = (photo[layer] + 1 + int(rng.integers(n_photos - 1))) % n_photos
        if camera:
            pivot = np.zeros(2)
            radius = S / 2
            points = canvas_pts
            extent = S / np.sqrt(2)
        else:
            pivot = rng.uniform(-half, half, size=2)
            radius = rng.uniform(0.08, 0.33) * S
            amps = rng.uniform(0, 0.25, HARMONICS) / np.arange(1, HARMONICS + 1)
            phases = rng.uniform(0, 2 * np.pi, HARMONICS)
            soft = rng.uniform(0.5, 2.5)
            shape[layer] = np.r_[radius, soft, amps, phases]
            ring = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            points = pivot + 1.5 * radius * np.stack([np.cos(ring), np.sin(ring)], -1)
            points = np.r_[points, pivot[None]]
            extent = 1.5 * radius
        u = rng.random()
        still = static_scene or rng.random() < 0.1
        target = 0.0 if still else cfg.max_motion * u**1.5
        motion = _sample_motion(rng, pivot, points, target, rng.random() < cfg.nonlinear_fraction,
                                camera, extent)
        largest = max(largest, target)
        steady = steady and abs(float(motion["zoom"])) <= np.log(MAX_ZOOM)
        place = _texture_placement(rng, radius, cfg.max_motion, side)
        local = np.array([[1.0, 0, -pivot[0]], [0, 1.0, -pivot[1]], [0, 0, 1.0]])
        for ti, t in enumerate(times):
            inv = np.linalg.inv(_motion_matrix(t=t, **motion))
            to_local[layer, ti] = local @ inv
            to_photo[layer, ti] = place @ local @ inv
        flow[layer] = _motion_matrix(t=1.0, **motion)
    gain, noise, blur, jpeg = _sample_effects(rng, cfg, times)
    return _Scene(photo, to_photo, to_local, shape, flow, gain, noise, blur, jpeg, largest, middle, times, steady)


def _texture_placement(rng: np.random.Generator, radius: float, max_motion: float, side: int) -> np.ndarray:
    """Layer-local coordinates -> photo pixels: scale, rotation, mirror, centre."""
    k = rng.uniform(0.6, 1.2)
    phi = rng.uniform(0, 2 * np.pi)
    mirror = 1.0 if rng.random() < 0.5 else -1.0
    # Room for the motion between t = 0 and 1; beyond (the neighbours at -1 and 2) a
    # layer may reach past its photo, which is then mirrored (``_reflect``).
    reach = min(side / 2, k * (radius * 1.5 + max_motion) + 2)
    centre = rng.uniform(reach, side - reach, size=2) if side - 2 * reach > 0 else np.full(2, side / 2)
    c, s = np.cos(phi), np.sin(phi)
    return np.array([[k * c * mirror, -k * s, centre[0] - 0.5],
                     [k * s * mirror, k * c, centre[1] - 0.5],
                     [0.0, 0.0, 1.0]])


def _sample_effects(rng: np.random.Generator, cfg: SceneConfig,
                    times: tuple[float, ...]) -> tuple[np.ndarray, float, float, float]:
    """(gain per frame, noise sigma, blur sigma, JPEG quality) of one scene; 0 = none."""
    effects = cfg.effects
    gain = np.ones(len(times))
    if effects and rng.random() < cfg.p_brightness:
        change = rng.uniform(-0.1, 0.1)
        gain = 1.0 + change * np.array(times)
    else:
        rng.random()
    noise = rng.uniform(0.5, 3.0) / 255 if effects and rng.random() < cfg.p_noise else 0.0
    blur = rng.uniform(0.4, 1.2) if effects and rng.random() < cfg.p_blur else 0.0
    jpeg = float(rng.integers(30, 96)) if effects and rng.random() < cfg.p_jpeg else 0.0
    return gain, noise, blur, jpeg


# --------------------------------------------------------------------------------------
# Rendering (torch)


@dataclass
class Scenes:
    """A rendered batch.

    ``frames``: (B, 3, 3, S, S) float32 in [0, 1], frames t = 0, ``times``, 1, RGB; with
    windows (B, 5, 3, S, S), frames t = -1, 0, ``times``, 1, 2.
    ``flow``: (B, 2, S, S) float32, true displacement (x, y) in px from t = 0 to t = 1 of
    the front-most layer at each pixel of frame 0. ``motion``: (B,) largest target
    displacement of any layer (px). ``times``: (B,) time of each middle frame.
    ``valid``: (B,) bool, with windows only: False where the neighbour frames are not
    usable (a layer zooms by more than ``MAX_ZOOM`` per interval).
    """

    frames: torch.Tensor
    flow: torch.Tensor
    motion: torch.Tensor
    times: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    @property
    def windows(self) -> bool:
        """True when ``frames`` holds five-frame windows."""
        return self.frames.shape[1] == 5

    def to_uint8(self) -> np.ndarray:
        """Frames as a (B, 3 or 5, 3, S, S) uint8 numpy array (for the patch cache)."""
        return self.frames.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


class SceneRenderer:
    """Renders synthetic triplets (or five-frame windows) from a ``PhotoBank``.

    >>> renderer = SceneRenderer(PhotoBank.from_folder("photos"), SceneConfig(), device="cuda")
    >>> batch = renderer.render(range(16), seed=0)     # scenes 0..15
    >>> batch.frames.shape                              # (16, 3, 3, 150, 150)
    >>> renderer.render(range(16), seed=0, windows=True).frames.shape   # (16, 5, 3, 150, 150)
    """

    def __init__(self, photos: PhotoBank | str | Path, config: SceneConfig = SceneConfig(),
                 device: str | torch.device | None = None) -> None:
        config.check()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if not isinstance(photos, PhotoBank):
            photos = PhotoBank.from_folder(photos, device=self.device)
        self.photos = photos
        vol = photos.volume.to(self.device)  # (1, 3, P, side, side)
        self._side = int(vol.shape[-1])
        self._atlas_h = vol.shape[2] * self._side
        self._atlas = vol.reshape(1, 3, self._atlas_h, self._side)  # photos stacked vertically
        self.config = config
        S = config.size
        half = (S - 1) / 2
        ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32) - half,
                                torch.arange(S, dtype=torch.float32) - half, indexing="ij")
        self._pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3).to(self.device)  # (S*S, 3)

    def describe(self) -> dict[str, Any]:
        """The settings that decide the pixels (for a cache index)."""
        return {**asdict(self.config), "photos": len(self.photos), "photos_fingerprint": self.photos.fingerprint,
                "photo_side": self._side}

    def scene_parameters(self, index: int, seed: int, windows: bool = False) -> _Scene:
        """The numbers ``render`` draws for scene ``index`` (its times: 0, t, 1 [, -1, 2])."""
        rng = np.random.default_rng([seed, index])
        return _sample_scene(rng, len(self.photos), self._side, self.config, scene_time(seed, index, self.config),
                             windows)

    @torch.no_grad()
    def render(self, indices: Iterable[int], seed: int = 0, windows: bool = False) -> Scenes:
        """Render scenes ``indices`` of the stream ``seed``; see ``Scenes``.

        ``windows``: five frames at t = -1, 0, t, 1, 2 instead of three (and ``valid``). The
        triplet frames are rendered apart from the neighbours, by exactly the computation
        they get without windows, so they are bit for bit the same.
        """
        cfg, S = self.config, self.config.size
        scenes, noises, ids = [], [], []
        for i in indices:
            ids.append(int(i))
            rng = np.random.default_rng([seed, int(i)])
            sc = _sample_scene(rng, len(self.photos), self._side, cfg, scene_time(seed, int(i), cfg), windows)
            scenes.append(sc)
            # One draw for all frames: its first three are the triplet's noise without windows.
            noises.append(rng.standard_normal((len(sc.times), 3, S, S), dtype=np.float32) * sc.noise
                          if sc.noise > 0 else None)
        if not scenes:
            raise ValueError("no scene indices given")
        triplet = slice(0, len(TIMES))
        out, alpha = self._composite(ids, scenes, seed, triplet)
        flow = self._flow(scenes, alpha)
        out = self._degrade(out, scenes, noises, triplet, [0, 2] if cfg.clean_target else [0, 1, 2])
        if windows:
            outer = slice(len(TIMES), len(TIMES) + len(NEIGHBOUR_TIMES))
            neighbours = self._degrade(self._composite(ids, scenes, seed, outer)[0], scenes, noises, outer, [0, 1])
            out = torch.cat([neighbours[:, :1], out, neighbours[:, 1:]], 1)
        motion = torch.tensor([s.motion for s in scenes], dtype=torch.float32)
        times = torch.tensor([s.time for s in scenes], dtype=torch.float32)
        valid = torch.tensor([s.steady for s in scenes]) if windows else None
        return Scenes(out.clamp_(0, 1), flow, motion, times, valid)

    def _apply(self, H: torch.Tensor) -> torch.Tensor:
        """Homographies (..., 3, 3) applied to every canvas pixel: (..., S*S, 2)."""
        q = H.reshape(-1, 3, 3) @ self._pix.T  # (M, 3, N)
        q = (q[:, :2] / q[:, 2:3]).transpose(1, 2)
        return q.reshape(*H.shape[:-2], self._pix.shape[0], 2)

    def _composite(self, ids: list[int], scenes: list[_Scene], seed: int,
                   slots: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers composited at the scenes' times ``slots``: frames (B, T, 3, S, S) and
        the foreground layers' alpha (B, L-1, T, 1, S, S)."""
        cfg = self.config
        S, dev = cfg.size, self.device
        B, L = len(scenes), cfg.max_layers + 1
        T = len(scenes[0].times[slots])
        f32 = torch.float32
        photo = torch.as_tensor(np.stack([s.photo for s in scenes]), device=dev)  # (B, L)
        to_photo = torch.as_tensor(np.stack([s.to_photo[:, slots] for s in scenes]), dtype=f32, device=dev)
        to_local = torch.as_tensor(np.stack([s.to_local[:, slots] for s in scenes])[:, 1:], dtype=f32, device=dev)
        shape = torch.as_tensor(np.stack([s.shape for s in scenes])[:, 1:], dtype=f32, device=dev)

        # Colour: the bank is an atlas of photos stacked vertically, one 2-D grid_sample.
        # Coordinates are reflected inside the layer's own photo first, so bilinear
        # filtering never reads a neighbouring photo.
        side = self._side
        xy = self._apply(to_photo)  # photo pixel coords (pixel centres at integers)
        if cfg.p_elastic > 0:
            xy = xy + self._elastic(ids, scenes, seed, slots)
        xy = _reflect(xy, side - 1.0)
        y_atlas = xy[..., 1] + (photo.clamp(min=0) * side).to(f32)[:, :, None, None]
        grid = torch.stack([xy[..., 0] * (2.0 / (side - 1)) - 1, y_atlas * (2.0 / (self._atlas_h - 1)) - 1], -1)
        colour = F.grid_sample(self._atlas, grid.reshape(1, B * L * T * S, S, 2), mode="bilinear",
                               padding_mode="border", align_corners=True)
        colour = colour[0].reshape(3, B, L, T, S, S).permute(1, 2, 3, 0, 4, 5)  # (B, L, T, 3, S, S)

        # Alpha: soft blob in each foreground layer's own (moving) coordinates,
        # r(phi) = R (1 + sum_k a_k cos(k phi + c_k)), ramp of width `softness` px.
        loc = self._apply(to_local)  # (B, L-1, T, N, 2)
        rho = torch.sqrt(loc[..., 0] ** 2 + loc[..., 1] ** 2)
        ang = torch.atan2(loc[..., 1], loc[..., 0])
        k = torch.arange(1, HARMONICS + 1, device=dev, dtype=f32)
        amps = shape[..., 2 : 2 + HARMONICS][:, :, None, None, :]
        phases = shape[..., 2 + HARMONICS :][:, :, None, None, :]
        wobble = (amps * torch.cos(ang[..., None] * k + phases)).sum(-1)
        radius = shape[..., 0][:, :, None, None] * (1 + wobble)
        soft = shape[..., 1].clamp(min=1e-3)[:, :, None, None]
        alpha = ((radius - rho) / soft + 0.5).clamp_(0, 1)
        alpha = alpha * (photo[:, 1:] >= 0)[:, :, None, None].to(f32)  # unused layers are empty
        alpha = alpha.reshape(B, L - 1, T, 1, S, S)

        out = colour[:, 0]
        for layer in range(1, L):
            a = alpha[:, layer - 1]
            out = out * (1 - a) + colour[:, layer] * a
        return out, alpha

    def _flow(self, scenes: list[_Scene], alpha: torch.Tensor) -> torch.Tensor:
        """Ground-truth flow t = 0 -> 1 of the front-most layer at t = 0 (alpha's first slot)."""
        B, L, S, N = len(scenes), self.config.max_layers + 1, self.config.size, self.config.size**2
        M = torch.as_tensor(np.stack([s.flow for s in scenes]), dtype=torch.float32, device=self.device)  # (B, L, 3, 3)
        flow_l = self._apply(M) - self._pix[:, :2]  # (B, L, N, 2)
        a0 = alpha[:, :, 0].reshape(B, L - 1, N)
        front = torch.zeros(B, N, dtype=torch.long, device=self.device)
        for layer in range(1, L):
            front = torch.where(a0[:, layer - 1] >= 0.5, torch.full_like(front, layer), front)
        flow = torch.gather(flow_l, 1, front[:, None, :, None].expand(B, 1, N, 2))[:, 0]
        return flow.reshape(B, S, S, 2).permute(0, 3, 1, 2).contiguous()

    def _elastic(self, ids: list[int], scenes: list[_Scene], seed: int, slots: slice) -> torch.Tensor:
        """Per-layer displacements (B, L, T, S*S, 2) in photo pixels at the times ``slots``;
        zero at t = 0. The oscillation is a function of t, so it holds at -1 and 2 too."""
        cfg = self.config
        S, L = cfg.size, cfg.max_layers + 1
        out = torch.zeros(len(ids), L, len(scenes[0].times[slots]), S * S, 2, device=self.device)
        for b, (index, scene) in enumerate(zip(ids, scenes)):
            # A stream of its own, so scenes without deformation stay exactly as they were.
            rng = np.random.default_rng([seed, index, 0xE1A5])
            if rng.random() >= cfg.p_elastic:
                continue
            control = torch.as_tensor(rng.standard_normal((L, 2, 5, 5)) * cfg.elastic_amplitude / 2, dtype=torch.float32)
            field = F.interpolate(control, size=(S, S), mode="bicubic", align_corners=True).to(self.device)
            frequency = rng.uniform(0.3, 1.2, L)
            phase = rng.uniform(0, 2 * np.pi, L)
            for ti, t in enumerate(scene.times[slots]):
                swing = torch.as_tensor(np.sin(2 * np.pi * frequency * t + phase) - np.sin(phase), dtype=torch.float32)
                out[b, :, ti] = (field * swing.to(self.device)[:, None, None, None]).permute(0, 2, 3, 1).reshape(L, S * S, 2)
        return out

    def _degrade(self, frames: torch.Tensor, scenes: list[_Scene], noises: list[np.ndarray | None],
                 slots: slice, inputs: list[int]) -> torch.Tensor:
        """Brightness, blur, noise, JPEG on the frames of times ``slots``, each only on the
        scenes that drew it; noise and JPEG only on the frames ``inputs`` of them."""
        dev = frames.device
        gain = torch.as_tensor(np.stack([s.gain[slots] for s in scenes]), dtype=torch.float32, device=dev)
        frames = frames * gain[:, :, None, None, None]
        for b, s in enumerate(scenes):
            x = frames[b]
            if s.blur > 0:
                x = gaussian_blur(x, s.blur)
            if noises[b] is not None:
                x[inputs] = x[inputs] + torch.from_numpy(noises[b][slots][inputs]).to(dev)
            if s.jpeg > 0:
                x[inputs] = jpeg_like(x[inputs].clamp(0, 1), s.jpeg)
            frames[b] = x
        return frames


def _reflect(x: torch.Tensor, top: float) -> torch.Tensor:
    """Mirror coordinates into [0, top] (like grid_sample's "reflection" padding)."""
    period = 2 * top
    x = torch.remainder(x, period)
    return torch.where(x > top, period - x, x)
