"""What a run stopped with Ctrl-C (SIGINT) must have written to stderr, shared by the
subprocess tests of every mode (file, frames, pipe, batch)."""

from __future__ import annotations


def interrupted_cleanly(stderr: str) -> bool:
    """Ctrl-C's one line, last and alone; a one-off kernel-build note may come before it."""
    return stderr.endswith("error: interrupted\n") and stderr.count("error") == 1 and "Traceback" not in stderr
