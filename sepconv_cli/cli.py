"""The ``sepconv`` command group.

Each command lives in ``sepconv_cli/commands/<name>.py``, parses its options and
calls the library; this module only wires them together and turns the library's
errors into one line on stderr with a distinct exit code (see ``errors.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings


def _interrupted_while_starting(signum: int, frame: object) -> None:
    # Nothing is written yet, so there is nothing to clean up: say so and leave without
    # the traceback of whatever module (torch, a few seconds) was being imported.
    sys.stderr.write("error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


# Only the main thread may set handlers (a test runner may import this from another).
_starting = threading.current_thread() is threading.main_thread()
if _starting:
    _default_sigint = signal.signal(signal.SIGINT, _interrupted_while_starting)

import click  # noqa: E402 - after the start-up Ctrl-C handler, on purpose

from sepconv_cli import __version__  # noqa: E402
from sepconv_cli.commands.evaluate import evaluate  # noqa: E402
from sepconv_cli.commands.interpolate import interpolate  # noqa: E402
from sepconv_cli.commands.prepare import prepare  # noqa: E402
from sepconv_cli.commands.train import train  # noqa: E402
from sepconv_cli.errors import Interrupted, SepconvError  # noqa: E402

if _starting:
    # From here on Ctrl-C is KeyboardInterrupt again (or whatever handler was there).
    signal.signal(signal.SIGINT, _default_sigint if _default_sigint is not None else signal.default_int_handler)


class UserError(click.ClickException):
    """A library error shown as ``error: <message>`` with the error's own exit code."""

    def __init__(self, error: SepconvError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.format_message()}", err=True)


class SepconvGroup(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except SepconvError as exc:
            raise UserError(exc) from None
        except KeyboardInterrupt:
            # Click would print "Aborted!" and exit 1; the documented code for Ctrl-C is 130,
            # and outputs are already cleaned up by the code the interrupt unwound through.
            raise UserError(Interrupted("interrupted")) from None


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    click.echo(f"warning: {message}", err=True)


@click.group(cls=SepconvGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sepconv")
def cli() -> None:
    """Double a video's frame rate with a learned kernel-based interpolator."""
    warnings.showwarning = _one_line_warning
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # The library's INFO lines are rare and worth seeing, e.g. the one-off kernel build.
    logging.getLogger("sepconv_cli").setLevel(logging.INFO)


cli.add_command(interpolate)
cli.add_command(prepare)
cli.add_command(train)
cli.add_command(evaluate)


def main() -> None:
    """Console entry point (``sepconv``, ``python -m sepconv_cli``)."""
    try:
        cli(prog_name="sepconv")
    except KeyboardInterrupt:
        # A second Ctrl-C while the first one is being handled, outside click's own catch.
        click.echo("error: interrupted", err=True)
        raise SystemExit(Interrupted.exit_code) from None
