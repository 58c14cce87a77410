"""Errors that name the file, field or row at fault (defined with the rest in `tailsynth.errors`)."""

from __future__ import annotations

from ..errors import DataError

__all__ = ["DataError"]
