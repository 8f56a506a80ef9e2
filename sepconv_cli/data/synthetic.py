"""Procedural training scenes with exactly known motion (the idea behind FlyingChairs).

A scene is a background photograph moved by a random camera motion (translation,
rotation, zoom, mild perspective) and 1..K foreground layers, each textured from
another photograph, cut out with a random soft-edged blob, and moved by its own
translation, rotation and zoom; later layers occlude earlier ones. The three frames at
t = 0, 0.5 and 1 are rendered from the same motion model, so the middle frame is the
true intermediate frame, not a blend, and occluded/disoccluded areas are correct.

Motion of a layer with pivot ``o`` (the canvas centre for the camera, the object centre
for a foreground layer), for a reference point ``q`` (its position at t = 0):

    p(t) = o + T(t) + P_t( exp(s1 t) R(theta1 t) (q - o) ),   T(t) = d t + 4 b t (1 - t)

``P_t`` is a perspective division with coefficients growing linearly in t (camera only).
``b`` bends the path (curved or accelerating motion) in about half the layers, so the
middle frame is not always where linear interpolation would put it. The parameters are
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


def scene_time(seed: int, index: int, cfg: SceneConfig) -> float:
    """The middle frame's time of scene ``index`` (0.5 unless ``cfg.random_time``).

    Drawn from a stream of its own, so turning it on leaves every other number of the
    scene as it was.
    """
    if not cfg.random_time:
        return 0.5
    rng = np.random.default_rng([seed, index, 0x7131])
    return 0.5 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.95))


def _sample_scene(rng: np.random.Generator, n_photos: int, side: int, cfg: SceneConfig,
                  middle: float = 0.5) -> _Scene:
    times = (0.0, middle, 1.0)
    S = cfg.size
    L = cfg.max_layers + 1
    half = (S - 1) / 2
    # Canvas pixel (j, i) has centred coordinates (j - half, i - half).
    grid = np.linspace(-half, half, 9)
    canvas_pts = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    static_scene = rng.random() < cfg.static_fraction
    n_fg = int(rng.integers(1, cfg.max_layers + 1))
    photo = np.full(L, -1)
    to_photo = np.tile(np.eye(3), (L, len(TIMES), 1, 1))
    to_local = np.tile(np.eye(3), (L, len(TIMES), 1, 1))
    flow = np.tile(np.eye(3), (L, 1, 1))
    shape = np.zeros((L, 2 + 2 * HARMONICS))
    largest = 0.0
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
        # Texture placement: local coords -> photo pixels (scale, rotation, mirror, centre).
        k = rng.uniform(0.6, 1.2)
        phi = rng.uniform(0, 2 * np.pi)
        mirror = 1.0 if rng.random() < 0.5 else -1.0
        reach = min(side / 2, k * (radius * 1.5 + cfg.max_motion) + 2)
        centre = rng.uniform(reach, side - reach, size=2) if side - 2 * reach > 0 else np.full(2, side / 2)
        c, s = np.cos(phi), np.sin(phi)
        place = np.array([[k * c * mirror, -k * s, centre[0] - 0.5],
                          [k * s * mirror, k * c, centre[1] - 0.5],
                          [0.0, 0.0, 1.0]])
        local = np.array([[1.0, 0, -pivot[0]], [0, 1.0, -pivot[1]], [0, 0, 1.0]])
        for ti, t in enumerate(times):
            inv = np.linalg.inv(_motion_matrix(t=t, **motion))
            to_local[layer, ti] = local @ inv
            to_photo[layer, ti] = place @ local @ inv
        flow[layer] = _motion_matrix(t=1.0, **motion)
    effects = cfg.effects
    gain = np.ones(len(TIMES))
    if effects and rng.random() < cfg.p_brightness:
        change = rng.uniform(-0.1, 0.1)
        gain = 1.0 + change * np.array(times)
    else:
        rng.random()
    noise = rng.uniform(0.5, 3.0) / 255 if effects and rng.random() < cfg.p_noise else 0.0
    blur = rng.uniform(0.4, 1.2) if effects and rng.random() < cfg.p_blur else 0.0
    jpeg = float(rng.integers(30, 96)) if effects and rng.random() < cfg.p_jpeg else 0.0
    return _Scene(photo, to_photo, to_local, shape, flow, gain, noise, blur, jpeg, largest, middle)


# --------------------------------------------------------------------------------------
# Rendering (torch)


@dataclass
class Scenes:
    """A rendered batch.

    ``frames``: (B, 3, 3, S, S) float32 in [0, 1], frames t = 0, ``times``, 1, RGB.
    ``flow``: (B, 2, S, S) float32, true displacement (x, y) in px from t = 0 to t = 1 of
    the front-most layer at each pixel of frame 0. ``motion``: (B,) largest target
    displacement of any layer (px). ``times``: (B,) time of each middle frame.
    """

    frames: torch.Tensor
    flow: torch.Tensor
    motion: torch.Tensor
    times: torch.Tensor | None = None

    def to_uint8(self) -> np.ndarray:
        """Frames as a (B, 3, 3, S, S) uint8 numpy array (for the patch cache)."""
        return self.frames.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


class SceneRenderer:
    """Renders synthetic triplets from a ``PhotoBank``.

    >>> renderer = SceneRenderer(PhotoBank.from_folder("photos"), SceneConfig(), device="cuda")
    >>> batch = renderer.render(range(16), seed=0)     # scenes 0..15
    >>> batch.frames.shape                              # (16, 3, 3, 150, 150)
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

    def scene_parameters(self, index: int, seed: int) -> _Scene:
        rng = np.random.default_rng([seed, index])
        return _sample_scene(rng, len(self.photos), self._side, self.config, scene_time(seed, index, self.config))

    @torch.no_grad()
    def render(self, indices: Iterable[int], seed: int = 0) -> Scenes:
        """Render scenes ``indices`` of the stream ``seed``; see ``Scenes``."""
        cfg = self.config
        S, dev = cfg.size, self.device
        scenes, noises, ids = [], [], []
        for i in indices:
            ids.append(int(i))
            rng = np.random.default_rng([seed, int(i)])
            sc = _sample_scene(rng, len(self.photos), self._side, cfg, scene_time(seed, int(i), cfg))
            scenes.append(sc)
            noises.append(rng.standard_normal((len(TIMES), 3, S, S), dtype=np.float32) * sc.noise
                          if sc.noise > 0 else None)
        if not scenes:
            raise ValueError("no scene indices given")
        B, L, T = len(scenes), cfg.max_layers + 1, len(TIMES)
        N = S * S
        f32 = torch.float32
        photo = torch.as_tensor(np.stack([s.photo for s in scenes]), device=dev)  # (B, L)
        to_photo = torch.as_tensor(np.stack([s.to_photo for s in scenes]), dtype=f32, device=dev)
        to_local = torch.as_tensor(np.stack([s.to_local for s in scenes])[:, 1:], dtype=f32, device=dev)
        shape = torch.as_tensor(np.stack([s.shape for s in scenes])[:, 1:], dtype=f32, device=dev)

        def apply(H: torch.Tensor) -> torch.Tensor:  # (..., 3, 3) -> (..., S*S, 2)
            q = H.reshape(-1, 3, 3) @ self._pix.T  # (M, 3, N)
            q = (q[:, :2] / q[:, 2:3]).transpose(1, 2)
            return q.reshape(*H.shape[:-2], N, 2)

        # Colour: the bank is an atlas of photos stacked vertically, one 2-D grid_sample.
        # Coordinates are reflected inside the layer's own photo first, so bilinear
        # filtering never reads a neighbouring photo.
        side = self._side
        xy = apply(to_photo)  # photo pixel coords (pixel centres at integers)
        if cfg.p_elastic > 0:
            xy = xy + self._elastic(ids, scenes, seed)
        xy = _reflect(xy, side - 1.0)
        y_atlas = xy[..., 1] + (photo.clamp(min=0) * side).to(f32)[:, :, None, None]
        grid = torch.stack([xy[..., 0] * (2.0 / (side - 1)) - 1, y_atlas * (2.0 / (self._atlas_h - 1)) - 1], -1)
        colour = F.grid_sample(self._atlas, grid.reshape(1, B * L * T * S, S, 2), mode="bilinear",
                               padding_mode="border", align_corners=True)
        colour = colour[0].reshape(3, B, L, T, S, S).permute(1, 2, 3, 0, 4, 5)  # (B, L, T, 3, S, S)

        # Alpha: soft blob in each foreground layer's own (moving) coordinates,
        # r(phi) = R (1 + sum_k a_k cos(k phi + c_k)), ramp of width `softness` px.
        loc = apply(to_local)  # (B, L-1, T, N, 2)
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

        # Ground-truth flow of the front-most layer at t = 0.
        M = torch.as_tensor(np.stack([s.flow for s in scenes]), dtype=f32, device=dev)  # (B, L, 3, 3)
        flow_l = apply(M) - self._pix[:, :2]  # (B, L, N, 2)
        a0 = alpha[:, :, 0].reshape(B, L - 1, N)
        front = torch.zeros(B, N, dtype=torch.long, device=dev)
        for layer in range(1, L):
            front = torch.where(a0[:, layer - 1] >= 0.5, torch.full_like(front, layer), front)
        flow = torch.gather(flow_l, 1, front[:, None, :, None].expand(B, 1, N, 2))[:, 0]
        flow = flow.reshape(B, S, S, 2).permute(0, 3, 1, 2).contiguous()

        out = self._degrade(out, scenes, noises)
        motion = torch.tensor([s.motion for s in scenes], dtype=torch.float32)
        times = torch.tensor([s.time for s in scenes], dtype=torch.float32)
        return Scenes(out.clamp_(0, 1), flow, motion, times)

    def _elastic(self, ids: list[int], scenes: list[_Scene], seed: int) -> torch.Tensor:
        """Per-layer displacements (B, L, T, S*S, 2) in photo pixels; zero at t = 0."""
        cfg = self.config
        S, L = cfg.size, cfg.max_layers + 1
        out = torch.zeros(len(ids), L, len(TIMES), S * S, 2, device=self.device)
        for b, (index, scene) in enumerate(zip(ids, scenes)):
            # A stream of its own, so scenes without deformation stay exactly as they were.
            rng = np.random.default_rng([seed, index, 0xE1A5])
            if rng.random() >= cfg.p_elastic:
                continue
            control = torch.as_tensor(rng.standard_normal((L, 2, 5, 5)) * cfg.elastic_amplitude / 2, dtype=torch.float32)
            field = F.interpolate(control, size=(S, S), mode="bicubic", align_corners=True).to(self.device)
            frequency = rng.uniform(0.3, 1.2, L)
            phase = rng.uniform(0, 2 * np.pi, L)
            for ti, t in enumerate((0.0, scene.time, 1.0)):
                swing = torch.as_tensor(np.sin(2 * np.pi * frequency * t + phase) - np.sin(phase), dtype=torch.float32)
                out[b, :, ti] = (field * swing.to(self.device)[:, None, None, None]).permute(0, 2, 3, 1).reshape(L, S * S, 2)
        return out

    def _degrade(self, frames: torch.Tensor, scenes: list[_Scene], noises: list[np.ndarray | None]) -> torch.Tensor:
        """Brightness, blur, noise, JPEG, each only on the scenes that drew it."""
        dev = frames.device
        gain = torch.as_tensor(np.stack([s.gain for s in scenes]), dtype=torch.float32, device=dev)
        frames = frames * gain[:, :, None, None, None]
        for b, s in enumerate(scenes):
            x = frames[b]
            if s.blur > 0:
                x = _gaussian_blur(x, s.blur)
            inputs = [0, 2] if self.config.clean_target else [0, 1, 2]
            if noises[b] is not None:
                x[inputs] = x[inputs] + torch.from_numpy(noises[b][inputs]).to(dev)
            if s.jpeg > 0:
                x[inputs] = _jpeg_like(x[inputs].clamp(0, 1), s.jpeg)
            frames[b] = x
        return frames


def _reflect(x: torch.Tensor, top: float) -> torch.Tensor:
    """Mirror coordinates into [0, top] (like grid_sample's "reflection" padding)."""
    period = 2 * top
    x = torch.remainder(x, period)
    return torch.where(x > top, period - x, x)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflected borders."""
    r = max(1, int(np.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


# JPEG's standard (Annex K) quantisation tables for luma and chroma.
_Q_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_Q_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def _jpeg_like(x: torch.Tensor, quality: float) -> torch.Tensor:
    """JPEG's lossy step on (N, 3, H, W) RGB in [0, 1]: YCbCr, 8x8 DCT, quantise, back.

    No chroma subsampling and no entropy coding (lossless anyway); enough to produce the
    blocking and ringing a network sees in compressed footage.
    """
    dev = x.device
    n, _, h, w = x.shape
    q = quality
    scale = 5000 / q if q < 50 else 200 - 2 * q
    tables = []
    for base in (_Q_LUMA, _Q_CHROMA, _Q_CHROMA):
        t = torch.tensor(base, dtype=torch.float32, device=dev).view(8, 8)
        tables.append(((t * scale + 50) // 100).clamp(min=1))
    Q = torch.stack(tables)  # (3, 8, 8)
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                     dtype=torch.float32, device=dev)
    ycc = torch.einsum("ij,njhw->nihw", m, x * 255)
    ycc[:, 0] -= 128
    ph, pw = (-h) % 8, (-w) % 8
    ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    H, W = h + ph, w + pw
    blocks = ycc.reshape(n, 3, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (n, 3, by, bx, 8, 8)
    i = torch.arange(8, dtype=torch.float32, device=dev)
    D = torch.cos((2 * i[None, :] + 1) * i[:, None] * np.pi / 16) * torch.where(i == 0, np.sqrt(1 / 8), np.sqrt(2 / 8))[:, None]
    coef = D @ blocks @ D.T
    Qb = Q[None, :, None, None]
    coef = torch.round(coef / Qb) * Qb
    blocks = D.T @ coef @ D
    ycc = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, H, W)[:, :, :h, :w]
    ycc[:, 0] += 128
    inv = torch.linalg.inv(m)
    rgb = torch.einsum("ij,njhw->nihw", inv, ycc) / 255
    return rgb.clamp(0, 1)
