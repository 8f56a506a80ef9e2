"""Opening files written with ``torch.save`` without running any code from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepconv_cli.errors import SepconvError


def load_code_free(
    path: str | Path, *, what: str, error: type[SepconvError], map_location: Any = "cpu"
) -> Any:  # noqa: ANN401 - whatever plain containers the file holds
    """``torch.load(path, weights_only=True)``, with one-line ``error``s naming ``what``.

    ``weights_only`` admits only tensors and plain containers, so a file from an untrusted
    source cannot execute code; anything else in it is refused as unreadable.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises anything on garbage
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise error(f"{path} is not a readable {what} ({reason})") from None
