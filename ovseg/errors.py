"""User-facing errors.

Every error a user can trigger with bad input is an :class:`OvsegError` whose message names
the *rule* that was broken, the *value* that was received and the *fix*. The CLI prints
``str(err)`` on one line and exits non-zero; no traceback is shown for these errors.

ovseg's own warnings are :class:`OvsegWarning` (a ``UserWarning``); the CLI prints exactly these as
``ovseg: warning: <message>`` and leaves third-party warnings in Python's default format.
"""

from __future__ import annotations

__all__ = ["refused_global", "OvsegError", "InputError", "ConfigError", "WeightsError", "OvsegWarning", "OutOfDomainWarning",
           "NoMatchWarning"]


#: At most this many characters of a received value are shown in an error.
_MAX_VALUE_CHARS = 1000


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
            shown = str(value)
            if len(shown) > _MAX_VALUE_CHARS:  # a huge value (a long list, a pasted file) must not flood the line
                shown = f"{shown[:_MAX_VALUE_CHARS]}... ({len(shown):,} characters)"
            parts.append(f"got {shown}")
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


class OvsegWarning(UserWarning):
    """Base class of ovseg's own warnings (the CLI prints them as ``ovseg: warning: <message>``)."""


class OutOfDomainWarning(OvsegWarning):
    """The mini profile ran on a prompt or image outside the mini world its models were trained on."""


class NoMatchWarning(OvsegWarning):
    """A segmentation assigned nothing (no mask passed the similarity threshold)."""


def refused_global(err: BaseException) -> str | None:
    """The global a ``torch.load(weights_only=True)`` refused to unpickle (torch names it in a many-line message,
    e.g. ``builtins.print``), or None when ``err`` is not such a refusal."""
    import re

    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return found.group(1) if found else None
