"""Settings of the separate processes (recorder, analyzer), read from the environment."""

from __future__ import annotations

import os


class ConfigError(RuntimeError):
    """A process cannot start with these settings; the message says which one."""


def env_number(name: str, default: float) -> float:
    """A positive number from the environment (`default` when unset)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from exc
    if not value > 0:  # also refuses nan
        raise ConfigError(f"{name} must be positive, not {raw!r}")
    return value


def env_whole(name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number from the environment within [minimum, maximum]."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, not {raw!r}")
    return value
