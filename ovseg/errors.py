"""User-facing errors.

Every error a user can trigger with bad input is an :class:`OvsegError` whose message names
the *rule* that was broken, the *value* that was received and the *fix*. The CLI prints
``str(err)`` on one line and exits non-zero; no traceback is shown for these errors.
"""

from __future__ import annotations

__all__ = ["OvsegError", "InputError", "ConfigError", "WeightsError"]


class OvsegError(Exception):
    """Base class: a one-line, actionable error.

    Args:
        rule: the rule that was broken, e.g. ``"image must be at least 32 px on each side"``.
        value: what was received, e.g. ``"20x400 px"``.
        fix: what to do about it.
    """

    exit_code = 2

    def __init__(self, rule: str, value: object = None, fix: str | None = None):
        self.rule = rule
        self.value = value
        self.fix = fix
        parts = [rule]
        if value is not None:
            parts.append(f"got {value}")
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("; ".join(parts))


class InputError(OvsegError, ValueError):
    """Bad image, prompt, mask or other user-supplied data."""


class ConfigError(OvsegError, ValueError):
    """Unknown key, out-of-range value, bad preset or unreadable YAML."""


class WeightsError(OvsegError, FileNotFoundError):
    """Model weights missing, unreadable or failing their checksum."""

    exit_code = 3
