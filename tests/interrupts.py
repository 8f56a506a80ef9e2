"""What a run stopped with Ctrl-C (SIGINT) must have written to stderr, shared by the
subprocess tests of every mode (file, frames, pipe, batch)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


# The INFO line of a first, one-off kernel build (a cold TORCH_EXTENSIONS_DIR).
BUILD_NOTE = "INFO: compiling the "


def without_build_notes(stderr: str) -> str:
    """``stderr`` without the one-off kernel-build notes, which only a cold cache prints."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith(BUILD_NOTE))


def interrupted_cleanly(stderr: str) -> bool:
    """Ctrl-C's one line, last and alone; a one-off kernel-build note may come before it."""
    return stderr.endswith("error: interrupted\n") and stderr.count("error") == 1 and "Traceback" not in stderr


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> tuple[int, str]:
    """Send SIGINT once ``ready()`` holds (at most 300 s: a loaded 2-core machine took over
    120 s to start an adaptation), then the exit code and stderr."""
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    return code, proc.stderr.read().decode()


# A site hook that stops the process at one point of its start-up: at the audit event
# ``event`` (Python's sys.addaudithook: "import" of a module, "open" of a file) whose first
# argument is ``target``, it creates ``marker`` and sleeps, so that a test can send Ctrl-C
# exactly there, whatever the machine's speed.
_PAUSE_HOOK = """\
import os, sys, time
_event, _target, _marker = (os.environ["SEPCONV_TEST_PAUSE_" + k] for k in ("EVENT", "TARGET", "MARKER"))
def _pause(event, args):
    if event == _event and args and str(args[0]) == _target and not os.path.exists(_marker):
        open(_marker, "w").close()
        time.sleep(120)
sys.addaudithook(_pause)
"""


def pause_at(folder: Path, env: dict[str, str], event: str, target: str) -> tuple[dict[str, str], Path]:
    """``env`` changed so that a Python subprocess pauses at ``event``/``target``, and the
    marker file that appears once it has."""
    hooks = folder / "pause-hook"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(_PAUSE_HOOK)
    marker = folder / "paused"
    path = os.pathsep.join(p for p in (str(hooks), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "SEPCONV_TEST_PAUSE_EVENT": event, "SEPCONV_TEST_PAUSE_TARGET": target,
            "SEPCONV_TEST_PAUSE_MARKER": str(marker)}, marker
