"""User-facing errors and warnings.

Anything a user can fix (a bad file, a bad option) raises :class:`RegtuneError` with a one-line
message; the CLI prints that line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class RegtuneError(Exception):
    """An error caused by user input: bad data, bad options, a missing file."""


class DataError(RegtuneError):
    """A data file that cannot be used; the message names the file and, where known, the record."""


class ConfigError(RegtuneError, ValueError):
    """An invalid option value or an unknown config key."""


class RegtuneWarning(UserWarning):
    """A warning that signals likely misuse; the test suite turns these into errors."""


def check_known_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` if ``data`` has keys that are not fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; known: {sorted(known)}")
