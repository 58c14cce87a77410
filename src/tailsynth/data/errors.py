"""Errors that name the file, field or row at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data; the message names the file/row/field."""
