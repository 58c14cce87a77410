"""The project's own error types: what a user can cause and fix (bad input, bad option, missing file,
unreachable service). The CLI turns exactly these into one clean line; anything else is a bug and keeps its
traceback."""

from __future__ import annotations


class TailsynthError(Exception):
    """An expected, user-facing error; the message names the file, field, option or endpoint at fault."""


class DataError(TailsynthError, ValueError):
    """Bad or missing input data; the message names the file/row/field."""


class ConfigError(TailsynthError, ValueError):
    """A bad option or configuration value (unknown key, value out of range, unknown name)."""


class MissingInputError(TailsynthError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class ServiceError(TailsynthError, RuntimeError):
    """An external service (pipeline endpoint, model server, object store) refused or could not be reached."""


class OutputBusyError(TailsynthError, RuntimeError):
    """An output folder is being written by another process (its lock is held); the message names the folder and
    the holder's PID."""
