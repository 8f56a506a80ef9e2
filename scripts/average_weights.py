"""Average several weights files of one model into one (stochastic weight averaging).

    python scripts/average_weights.py OUT.pt RUN/snapshots/*.pt

(`sepconv train --average-from STEP` writes those snapshots and their average itself.)

Used to turn a run's late checkpoints (exported with ``sepconv_cli.training.export_checkpoint``)
into one set of weights without picking a checkpoint by its held-out score.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sepconv_cli.errors import SepconvError
from sepconv_cli.training.averaging import save_average


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out, sources = Path(argv[1]), argv[2:]
    if any(Path(source).resolve() == out.resolve() for source in sources):
        print(f"error: {out} is also an input; write the average elsewhere", file=sys.stderr)
        return 2
    try:
        save_average(sources, out)
    except SepconvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"{out}: the average of {len(sources)} weights files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
