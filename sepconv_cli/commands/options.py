"""Option types of ``interpolate`` (rates, times, the dedup threshold) and its one-line
usage errors: the parsing of what a user types, before any library call."""

from __future__ import annotations

from fractions import Fraction

import click

from sepconv_cli.duplicates import AUTO as DEDUP_AUTO
from sepconv_cli.timespan import TimeSpan, parse_time


class OneLineUsageError(click.UsageError):
    """Bad command-line usage shown as ``error: <message>`` (exit 2), like the library's errors."""

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.format_message()}", err=True)


class FrameRate(click.ParamType):
    """A frame rate as an exact fraction: ``60``, ``59.94``, ``30000/1001``."""

    name = "rate"

    def convert(self, value, param, ctx) -> Fraction:  # noqa: ANN001 - click's signature
        if isinstance(value, Fraction):
            return value
        text = str(value).strip()
        try:
            rate = Fraction(text)
        except (ValueError, ZeroDivisionError):
            rate = None
        if rate is None or rate <= 0 or rate > 1000:
            option = param.opts[0] if param is not None and param.opts else "--fps"
            raise OneLineUsageError(
                f"{option} {text!r} is not a frame rate; give a positive number or fraction up to 1000 "
                "such as 60, 59.94 or 30000/1001", ctx=ctx,
            )
        return rate


class DedupThreshold(click.ParamType):
    """``auto`` or a number of 8-bit levels from 0 to 255."""

    name = "levels"

    def convert(self, value, param, ctx) -> float | str:  # noqa: ANN001 - click's signature
        if isinstance(value, float) or value == DEDUP_AUTO:
            return value
        try:
            levels = float(str(value).strip())
        except ValueError:
            levels = -1.0
        if not 0 <= levels <= 255:
            raise OneLineUsageError(f"--dedup-threshold {value!r}: give auto or a number of levels from 0 to 255",
                                    ctx=ctx)
        return levels


class TimeValue(click.ParamType):
    """A time as exact seconds: ``12.5``, ``1:02.5``, ``01:02:03.250``."""

    name = "time"

    def convert(self, value, param, ctx) -> Fraction:  # noqa: ANN001 - click's signature
        if isinstance(value, Fraction):
            return value
        option = param.opts[0] if param is not None and param.opts else "TIME"
        try:
            return parse_time(str(value))
        except ValueError as error:
            raise OneLineUsageError(f"{option}: {error}", ctx=ctx) from None


def time_span(start: Fraction | None, duration: Fraction | None, ctx: click.Context) -> TimeSpan | None:
    """``--start``/``--duration`` as a ``TimeSpan`` (None when neither is given)."""
    if start is None and duration is None:
        return None
    if duration is not None and duration <= 0:
        raise OneLineUsageError(f"--duration must be more than 0 s, not {float(duration):g}", ctx=ctx)
    return TimeSpan(start or Fraction(0), duration)
