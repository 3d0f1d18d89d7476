"""The registry's JSON files: the one reader, its errors, its timestamp and name rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from storage.fs import read_json

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RegistryError(Exception):
    """Base class for registry failures that a caller can report without a traceback."""


class CorruptRegistry(RegistryError):
    """A registry file (registry.json, aliases.json, an alias generation) is damaged."""


def read_registry_json(url: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The one reader of registry JSON: a JSON object with `required` keys, else CorruptRegistry.

    FileNotFoundError passes through (absence is not damage); anything unreadable, truncated,
    empty or of the wrong shape is reported naming the file.
    """
    try:
        body = read_json(url)
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise CorruptRegistry(f"{url} is damaged: not valid JSON ({e})") from e
    if not isinstance(body, dict):
        raise CorruptRegistry(f"{url} is damaged: expected a JSON object, "
                              f"found {type(body).__name__}")
    missing = [key for key in required if key not in body]
    if missing:
        raise CorruptRegistry(f"{url} is damaged: missing {', '.join(missing)}")
    return body


def utc_now() -> str:
    """Current UTC time, ISO 8601 (the registry's one timestamp format)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str, kind: str = "model name") -> str:
    """Model and alias names become folder names and keys: no slashes, no leading dot."""
    if not _NAME.match(name):
        raise ValueError(f"{kind} must match {_NAME.pattern}, got {name!r}")
    return name
