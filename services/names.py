"""The one check of the names clients choose: tenants and adapters (each kind has its rule)."""

from __future__ import annotations

import re
from enum import Enum

from services.errors import InvalidInput


class NameKind(Enum):
    """A kind of name: its pattern and the rule the error message states."""

    # Tenant names end up in Kubernetes labels and metric labels: DNS-label style.
    TENANT = ("tenant", r"^[a-z0-9][a-z0-9-]{0,62}$", "1-63 lowercase letters, digits and '-'")
    ADAPTER = ("adapter", r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$", "1-64 letters, digits, '_' and '-'")

    def __init__(self, label: str, pattern: str, rule: str) -> None:
        self.label = label
        self.pattern = re.compile(pattern)
        self.rule = rule


def check_name(name: object, kind: NameKind) -> str:
    """``name`` if it follows ``kind``'s rule; else :class:`InvalidInput` stating the rule."""
    # fullmatch: with match, "$" also matches before a trailing newline ("acme\n" passed).
    if not isinstance(name, str) or not kind.pattern.fullmatch(name):
        raise InvalidInput(
            f"{kind.label} name {name!r} is invalid: use {kind.rule}, starting with a letter or "
            "digit",
            param="name",
        )
    return name
