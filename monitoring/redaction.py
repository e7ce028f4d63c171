"""Mask personal data (emails, phone numbers, card numbers) in logged text before it is stored.

Patterns are compiled into one alternation and applied in a single ``re.sub`` pass. Each pattern
names a cheap ``trigger`` (a literal such as "@", or a regex) that every match must contain; only
patterns whose trigger occurs in the text take part, so most texts (no "@", few digits) cost a
couple of fast substring scans. A pattern may carry a validator (the card pattern checks the Luhn
digit) so that long order numbers stay readable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

# The lookbehind starts a match only where a run of local-part characters begins: without it the
# search retries from every position of a long run ("aaaa...@"), scanning to its end each time,
# which is quadratic (48k characters took seconds, 8 MB hours). With it each run is scanned once.
EMAIL = (r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
         r"\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes (how card numbers are written).
CARD = r"(?<![\w+])\d(?:[ -]?\d){12,18}(?!\w)"
# Optional +country code, optional area code in parentheses, then at least two groups with
# separators; or five pairs (06 12 34 56 78); or a bare run of 10-13 digits. Requiring groups of >= 3 digits keeps dates
# (2024-01-15), times and decimals out.
PHONE = (
    r"(?<![\w+])(?:"
    r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{3,4}){1,3}"
    r"|(?:\+\d{1,3}[ .-]?)?\d{1,2}(?:[ .-]\d{2}){4}"
    r"|\+?\d{10,13}"
    r")(?!\w)"
)


def luhn_valid(candidate: str) -> bool:
    """True if the digits of ``candidate`` pass the Luhn checksum (as payment cards do)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return bool(digits) and total % 10 == 0


def _phone_digits_ok(candidate: str) -> bool:
    return 7 <= sum(c.isdigit() for c in candidate) <= 15


@dataclass(frozen=True)
class RedactionPattern:
    """One kind of personal data: a regex, its replacement and an optional extra check."""

    name: str
    regex: str
    replacement: str
    validate: Callable[[str], bool] | None = None
    trigger: str | None = None
    """A regex every match contains; texts without it skip this pattern. None: always run."""


DEFAULT_PATTERNS: tuple[RedactionPattern, ...] = (
    RedactionPattern("email", EMAIL, "[EMAIL]", trigger="@"),
    # Cards before phones: a 16-digit card would otherwise also look like a grouped phone number.
    RedactionPattern("card", CARD, "[CARD]", luhn_valid, trigger=r"\d\d"),
    RedactionPattern("phone", PHONE, "[PHONE]", _phone_digits_ok, trigger=r"\d\d"),
)


class Redactor:
    """Applies a fixed set of patterns. Build once (compiling is the slow part), call often."""

    def __init__(self, patterns: Iterable[RedactionPattern] = DEFAULT_PATTERNS) -> None:
        self.patterns = tuple(patterns)
        names = [p.name for p in self.patterns]
        if len(set(names)) != len(names):
            raise ValueError(f"redaction pattern names must be unique, got {names}")
        for p in self.patterns:
            if not p.name.isidentifier():
                raise ValueError(f"pattern name {p.name!r} must be a Python identifier")
            for what, regex in (("regex", p.regex), ("trigger", p.trigger or "")):
                try:
                    re.compile(regex)
                except re.error as exc:
                    raise ValueError(f"pattern {p.name!r}: {what} is not a valid regex: {exc}") from exc
        self._by_name = {p.name: p for p in self.patterns}
        self._index = {p.name: i for i, p in enumerate(self.patterns)}
        self._fallbacks: dict[int, Redactor] = {}
        self._triggers = sorted({p.trigger for p in self.patterns if p.trigger is not None})
        self._combined: dict[tuple[bool, ...], re.Pattern[str] | None] = {}

    def _regex_for(self, text: str) -> re.Pattern[str] | None:
        # Each distinct trigger is searched once; re caches the compiled trigger patterns.
        active = tuple(re.search(t, text) is not None for t in self._triggers)
        if active not in self._combined:
            present = {t for t, on in zip(self._triggers, active) if on}
            chosen = [p for p in self.patterns if p.trigger is None or p.trigger in present]
            self._combined[active] = (
                re.compile("|".join(f"(?P<{p.name}>{p.regex})" for p in chosen))
                if chosen
                else None
            )
        return self._combined[active]

    def _replace(self, match: re.Match[str]) -> str:
        name = match.lastgroup
        assert name is not None  # each alternative of the combined regex is a named group
        pattern = self._by_name[name]
        text = match.group()
        if pattern.validate is None or pattern.validate(text):
            return pattern.replacement
        # Rejected (e.g. digits failing the card checksum): later patterns still get their turn.
        position = self._index[pattern.name] + 1
        if position not in self._fallbacks:
            self._fallbacks[position] = Redactor(self.patterns[position:])
        return self._fallbacks[position].redact(text)

    def redact(self, text: str) -> str:
        """``text`` with every match replaced by its pattern's replacement."""
        if not text:
            return text
        regex = self._regex_for(text)
        return text if regex is None else regex.sub(self._replace, text)

    def redact_messages(self, messages: list[Mapping[str, object]]) -> list[dict[str, object]]:
        """Chat messages with every string ``content`` redacted (other fields copied)."""
        out = []
        for message in messages:
            copy = dict(message)
            content = copy.get("content")
            if isinstance(content, str):
                copy["content"] = self.redact(content)
            out.append(copy)
        return out


def build_redactor(
    *, emails: bool = True, phones: bool = True, cards: bool = True,
    extra: Iterable[RedactionPattern] = (),
) -> Redactor:
    """A redactor with the chosen default patterns plus ``extra`` ones (applied after them)."""
    wanted = {"email": emails, "phone": phones, "card": cards}
    chosen = [p for p in DEFAULT_PATTERNS if wanted[p.name]]
    return Redactor([*chosen, *extra])


def redact(text: str) -> str:
    """Mask emails, phone numbers and card numbers with the default patterns."""
    return _default().redact(text)


_DEFAULT: Redactor | None = None


def _default() -> Redactor:
    global _DEFAULT
    if _DEFAULT is None:  # built lazily: no work at import time
        _DEFAULT = Redactor()
    return _DEFAULT
