"""Reading a YAML settings file: one place for the checks every config reader needs."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, MissingInputError


def read_mapping(path: str | Path, what: str = "config file") -> dict:
    """The top-level mapping of a YAML file; a missing file, bad YAML or a non-mapping is an error naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of names to values at the top level")
    return raw
