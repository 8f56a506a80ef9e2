"""The compiled CPU splat against its PyTorch definition (``sepconv_cli.flow.splat_reference``)."""

from __future__ import annotations

import pytest
import torch

from sepconv_cli.ext.separable_conv import op_impl
from sepconv_cli.flow import splat, splat_reference
from tests.conftest import needs_cxx


def inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    frame0, frame1 = (torch.rand(2, 3, 12, 17, generator=gen, dtype=dtype) for _ in range(2))
    # Flows of up to ±5 px: pixels land outside the frame, collide, and leave holes.
    f01, f10 = ((torch.rand(2, 2, 12, 17, generator=gen, dtype=dtype) - 0.5) * 10 for _ in range(2))
    # The first columns of both frames move 6 px right, which leaves column 0 a hole.
    f01[:, 0, :, :6] = 6.0
    f10[:, 0, :, :6] = 6.0
    f01[:, 1, :, :6] = f10[:, 1, :, :6] = 0.0
    return frame0, frame1, f01, f10


@needs_cxx
@pytest.mark.parametrize("t", [0.5, 0.2, torch.tensor([0.3, 0.9])])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_splat_matches_reference(t: float | torch.Tensor, dtype: torch.dtype) -> None:
    args = inputs(dtype)
    with op_impl("compiled"):
        image, coverage = splat(*args, t)
    expected_image, expected_coverage = splat_reference(*args, t)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    assert (expected_coverage < 1e-3).any()  # holes are exercised
    torch.testing.assert_close(coverage, expected_coverage, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(image, expected_image, rtol=tolerance, atol=tolerance)


def test_torch_impl_runs_the_reference() -> None:
    args = inputs(torch.float32)
    with op_impl("torch"):
        image, coverage = splat(*args, 0.5)
    torch.testing.assert_close(image, splat_reference(*args, 0.5)[0], rtol=0, atol=0)
