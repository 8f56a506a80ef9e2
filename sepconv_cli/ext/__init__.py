"""Custom operations of SepConv with compiled CPU and CUDA kernels and pure-PyTorch fall-backs.

``set_op_impl`` / ``op_impl`` choose the implementation ("auto", "compiled" or "torch").
"""

from .deformable_separable_conv import deformable_separable_conv, deformable_separable_conv_reference
from .separable_conv import (
    OP_IMPLS,
    get_op_impl,
    op_impl,
    separable_conv,
    separable_conv_reference,
    set_op_impl,
)

__all__ = [
    "deformable_separable_conv",
    "deformable_separable_conv_reference",
    "OP_IMPLS",
    "get_op_impl",
    "op_impl",
    "separable_conv",
    "separable_conv_reference",
    "set_op_impl",
]
