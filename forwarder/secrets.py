"""Secret values from the configuration, and their redaction everywhere.

A secret is written in the configuration as ``env:NAME`` (an environment
variable), ``file:PATH`` (a file, as Kubernetes mounts secrets) or as a plain
literal. Every resolved secret is remembered so that the log pipeline can
blank it out of any message, whichever way it got there.
"""

from __future__ import annotations

import os
from pathlib import Path

REDACTED = "***"

_known_secrets: set[str] = set()


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or formatting."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= 4:
            # Short values would blank out ordinary words in log lines.
            _known_secrets.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(reference: str) -> Secret:
    """Turn ``env:NAME``, ``file:PATH`` or a literal into a Secret.

    Raises ValueError with a message fit for a configuration error.
    """
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
        value = value.strip()
    elif reference.startswith("file:"):
        path = Path(reference[5:])
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(
                f"cannot read secret file {path}: {error.strerror}"
            ) from None
    else:
        value = reference
    if not value:
        raise ValueError("the secret is empty")
    return Secret(value)


def redact(text: str) -> str:
    """Replace every known secret inside ``text`` with a placeholder."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
