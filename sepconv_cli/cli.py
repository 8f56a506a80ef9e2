"""The ``sepconv`` command group.

Each command lives in ``sepconv_cli/commands/<name>.py``, parses its options and
calls the library; this module only wires them together and turns the library's
errors into one line on stderr with a distinct exit code (see ``errors.py``).
"""

from __future__ import annotations

import logging
import warnings

import click

from sepconv_cli import __version__
from sepconv_cli.commands.evaluate import evaluate
from sepconv_cli.commands.interpolate import interpolate
from sepconv_cli.commands.prepare import prepare
from sepconv_cli.commands.train import train
from sepconv_cli.errors import Interrupted, SepconvError


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
