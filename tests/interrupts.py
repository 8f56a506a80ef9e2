"""What a run stopped with Ctrl-C (SIGINT) must have written to stderr, shared by the
subprocess tests of every mode (file, frames, pipe, batch)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def interrupted_cleanly(stderr: str) -> bool:
    """Ctrl-C's one line, last and alone; a one-off kernel-build note may come before it."""
    return stderr.endswith("error: interrupted\n") and stderr.count("error") == 1 and "Traceback" not in stderr


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> tuple[int, str]:
    """Send SIGINT once ``ready()`` holds (at most 120 s), then the exit code and stderr."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    return code, proc.stderr.read().decode()
