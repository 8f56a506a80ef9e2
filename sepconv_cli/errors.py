"""Errors a user can act on.

Everything below the CLI raises these (never ``sys.exit``); the CLI turns each into
one line on stderr and a distinct exit code, so scripts can tell failures apart.
"""

from __future__ import annotations


class SepconvError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class InputError(SepconvError):
    """The input video or dataset is missing, unreadable or unusable."""

    exit_code = 3


class OutputError(SepconvError):
    """The output cannot be written where the user asked."""

    exit_code = 4


class OutputClosed(OutputError):
    """The reader of an output stream (a pipe) closed it before the end: it has what it
    wanted, so the CLI stops quietly rather than failing."""


class WeightsError(SepconvError):
    """A weights file is missing, corrupt, or made for another model."""

    exit_code = 5


class DeviceError(SepconvError):
    """The requested device (e.g. a CUDA GPU) is not available."""

    exit_code = 6


class Interrupted(SepconvError):
    """The user stopped the run (Ctrl-C / SIGINT); exit code 130, as shells report SIGINT."""

    exit_code = 130


class UsageError(SepconvError):
    """A request that contradicts itself or that the chosen model cannot meet (bad options);
    exit code 2, as for a mistyped command line."""

    exit_code = 2


class ModelUsageError(UsageError):
    """A usage error that is about the model, not one input (``--dedup`` with a model that
    only predicts midpoints): every input of a batch would meet it, so the batch stops."""
