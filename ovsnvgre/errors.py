"""The two kinds of failure a user sees, each with its exit status."""

from __future__ import annotations


class OvsnvgreError(Exception):
    """Base of every error that is reported as one line, never as a traceback."""

    exit_code = 1


class FabricError(OvsnvgreError):
    """The fabric file or the command line is wrong: the user must fix the input."""

    exit_code = 2


class UsageError(FabricError):
    """The command line (host choice, options) is wrong."""


class SystemFailure(OvsnvgreError):
    """The switch, the kernel or a tool failed while doing what the fabric asks."""

    exit_code = 1
