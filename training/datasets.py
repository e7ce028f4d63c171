"""Parse and validate fine-tuning datasets; report every problem with its line number.

Formats (see DESIGN.md): chat = OpenAI fine-tuning JSONL, one ``{"messages": [...]}`` per line;
classification = JSONL ``{"text", "label"}`` or CSV with ``text`` and ``label`` columns.
Everything here is pure: bytes in, a :class:`ValidationReport` out. Token limits use a counter
callable (see :func:`training.tokenize.conversation_token_counter`) so the same tokenizer and
chat template as training decide what is "too long".

Tool calling (OpenAI's format) is accepted and rendered for training as
:mod:`training.tool_calls` says.

Duplicates are common in real corpora and, as OpenAI does, accepted: a repeated example is a
warning (not an issue) and is trained once, its first occurrence kept. A classification text
repeated with a different label is a warning too (the later lines are dropped) unless
``strict=True``, which makes it an issue.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE, classification_messages
from services.store.models import AdapterTask
from training.errors import DatasetError, DatasetIssue
from training.tool_calls import (
    render_tool_messages,
    tool_call_issues,
    tools_issues,
)

Message = dict[str, Any]
TokenCounter = Callable[[list[Message]], int]
"""Counts the tokens of one conversation exactly as training would see it."""

ROLES = ("system", "user", "assistant", "tool")
MAX_STORED_WARNINGS = 50
"""Warnings kept in :class:`DatasetStats` (stored with the file); the counts cover them all."""


@dataclass(frozen=True)
class ChatExample:
    messages: list[Message]
    line: int = 0


@dataclass(frozen=True)
class ClassificationExample:
    text: str
    label: str
    line: int = 0


@dataclass(frozen=True)
class DatasetStats:
    """What the files API stores with a validated file."""

    task: AdapterTask
    examples: int
    sha256: str
    tokens: int | None = None
    max_example_tokens: int | None = None
    label_counts: dict[str, int] | None = None
    duplicates: int = 0
    """Repeated examples dropped (each is trained once)."""
    conflicting_labels: int = 0
    """Classification lines dropped because an earlier line has the same text, another label."""
    warnings: tuple[DatasetIssue, ...] = ()
    """The first :data:`MAX_STORED_WARNINGS` warnings, in line order."""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["warnings"] = [{"line": w.line, "message": w.message} for w in self.warnings]
        return out


@dataclass
class ValidationReport:
    """Parsed examples (the valid ones, each once), every issue and warning found, the stats.

    Issues refuse the file; warnings (duplicates, conflicting labels) do not.
    """

    task: AdapterTask
    examples: list[ChatExample] | list[ClassificationExample]
    issues: list[DatasetIssue]
    stats: DatasetStats
    labels: list[str] = field(default_factory=list)
    warnings: list[DatasetIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def raise_for_issues(self, name: str = "dataset") -> ValidationReport:
        """Raise :class:`DatasetError` listing every issue; return self when there are none."""
        if self.issues:
            raise DatasetError(self.issues, name=name)
        return self


def content_hash(data: bytes) -> str:
    """sha256 of the file's bytes, hex: the dataset's content address."""
    return hashlib.sha256(data).hexdigest()


def _lines(data: bytes, issues: list[DatasetIssue]) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; undecodable lines become issues."""
    out = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(DatasetIssue(number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        if text.strip():
            out.append((number, text))
    return out


def _check_length(
    line: int, messages: list[Message], count: TokenCounter | None, max_tokens: int | None,
    issues: list[DatasetIssue], counts: list[int],
) -> bool:
    """Count the example's tokens; False (and an issue) when it is over ``max_tokens``."""
    if count is None:
        return True
    n = count(messages)
    if max_tokens is not None and n > max_tokens:
        issues.append(DatasetIssue(
            line, f"{n} tokens, over the maximum of {max_tokens}; shorten the example or raise "
            "max_length"))
        return False
    counts.append(n)
    return True


def _message_issues(messages: Any, tools: Any = None) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ['"messages" must be a non-empty list of {"role", "content"} objects']
    problems, known = tools_issues(tools)
    call_ids: set[str] = set()
    calls_broken = False  # then an unmatched tool_call_id is a consequence, not another problem
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(f"{where} is not an object")
            continue
        role = message.get("role")
        if role is None:
            problems.append(f'{where} has no "role"')
        elif role not in ROLES:
            problems.append(f"{where} has unknown role {role!r}; use one of {', '.join(ROLES)}")
        content = message.get("content")
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant":
                problems.append(f'{where} "tool_calls" are only allowed on assistant messages')
            else:
                call_problems, ids = tool_call_issues(where, calls, known)
                problems.extend(call_problems)
                calls_broken = calls_broken or bool(call_problems)
                call_ids.update(ids)
        if calls is not None and role == "assistant" and content is None:
            pass  # a tool-calling reply may have no text
        elif content is None:
            problems.append(f'{where} has no "content"')
        elif not isinstance(content, str):
            problems.append(f'{where} "content" must be a string')
        elif not content.strip() and calls is None:
            problems.append(f"{where} ({role}) has empty content")
        if role == "tool":
            answered = message.get("tool_call_id")
            if not isinstance(answered, str) or not answered.strip():
                problems.append(f'{where} (tool) needs a "tool_call_id" naming the call it answers')
            elif answered not in call_ids and not calls_broken:
                problems.append(f"{where} answers tool_call_id {answered!r}, which no earlier "
                                "assistant tool call has")
        weight = message.get("weight")
        if weight is not None and (role != "assistant" or weight not in (0, 1)):
            problems.append(f'{where} "weight" must be 0 or 1 and only on assistant messages')
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        problems.append("no assistant message: there is nothing to learn from this example")
    elif all(m.get("weight") == 0 for m in messages
             if isinstance(m, dict) and m.get("role") == "assistant"):
        problems.append("every assistant message has weight 0: nothing to learn")
    if "system" in roles[1:]:
        problems.append("a system message may only come first")
    return problems


def validate_chat_dataset(
    data: bytes, *, count_tokens: TokenCounter | None = None, max_tokens: int | None = None,
) -> ValidationReport:
    """Validate OpenAI fine-tuning chat JSONL; every issue is collected, nothing raises."""
    issues: list[DatasetIssue] = []
    warnings: list[DatasetIssue] = []
    examples: list[ChatExample] = []
    counts: list[int] = []
    first_seen: dict[str, int] = {}
    for line, text in _lines(data, issues):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            issues.append(DatasetIssue(line, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            issues.append(DatasetIssue(line, "JSON nested too deeply to read"))
            continue
        if not isinstance(record, dict) or "messages" not in record:
            issues.append(DatasetIssue(line, 'expected an object with a "messages" list'))
            continue
        problems = _message_issues(record["messages"], record.get("tools"))
        if problems:
            issues.extend(DatasetIssue(line, p) for p in problems)
            continue
        messages = render_tool_messages(record["messages"])
        key = json.dumps([(m["role"], m["content"]) for m in messages], ensure_ascii=False)
        if key in first_seen:
            warnings.append(DatasetIssue(
                line, f"duplicate of line {first_seen[key]}; dropped, trained once"))
            continue
        first_seen[key] = line
        if _check_length(line, messages, count_tokens, max_tokens, issues, counts):
            examples.append(ChatExample(messages=messages, line=line))
    if not examples and not issues:
        issues.append(DatasetIssue(None, "the file has no examples"))
    stats = DatasetStats(
        task=AdapterTask.CHAT, examples=len(examples), sha256=content_hash(data),
        tokens=sum(counts) if count_tokens else None,
        max_example_tokens=max(counts, default=0) if count_tokens else None,
        duplicates=len(warnings), warnings=tuple(warnings[:MAX_STORED_WARNINGS]),
    )
    return ValidationReport(AdapterTask.CHAT, examples, sorted(issues, key=_issue_order), stats,
                            warnings=warnings)


def _classification_records(
    data: bytes, fmt: Literal["jsonl", "csv"], issues: list[DatasetIssue]
) -> list[tuple[int, Any, Any]]:
    """(line, text, label) for every record that parsed; parse problems become issues."""
    records = []
    if fmt == "jsonl":
        for line, text in _lines(data, issues):
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                issues.append(DatasetIssue(line, f"invalid JSON: {exc.msg} (column {exc.colno})"))
                continue
            if not isinstance(record, dict):
                issues.append(DatasetIssue(line, 'expected an object with "text" and "label"'))
                continue
            missing = [k for k in ("text", "label") if k not in record]
            if missing:
                issues.append(DatasetIssue(line, f"missing field(s): {', '.join(missing)}"))
                continue
            records.append((line, record["text"], record["label"]))
        return records
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        issues.append(DatasetIssue(data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8"))
        return records
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return records
    except csv.Error as exc:
        issues.append(_csv_issue(1, exc))
        return records
    columns = [c.strip().lower() for c in header]
    if "text" not in columns or "label" not in columns:
        issues.append(DatasetIssue(1, f"CSV header must have columns text and label, got {header}"))
        return records
    ti, li = columns.index("text"), columns.index("label")
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the reader cannot resync after this: stop at the first one
            issues.append(_csv_issue(start, exc))
            break
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            issues.append(DatasetIssue(line, f"expected {len(header)} columns, got {len(row)}"))
            continue
        records.append((line, row[ti], row[li]))
    return records


def _csv_issue(line: int, exc: csv.Error) -> DatasetIssue:
    """A CSV parse error (a field over csv.field_size_limit(), a stray NUL) as an issue."""
    if "field limit" in str(exc):
        return DatasetIssue(line, f"a CSV field is longer than {csv.field_size_limit()} "
                                  "characters; shorten the text (or check for an unclosed quote)")
    return DatasetIssue(line, f"unreadable CSV: {exc}")


def sniff_format(data: bytes, filename: str | None = None) -> Literal["jsonl", "csv"]:
    """``csv`` for a .csv name or a first line that is not a JSON object, else ``jsonl``."""
    if filename:
        lowered = filename.lower()
        if lowered.endswith(".csv"):
            return "csv"
        if lowered.endswith((".jsonl", ".json")):
            return "jsonl"
    first = data.lstrip(b"\xef\xbb\xbf").lstrip()[:1]
    return "jsonl" if first == b"{" else "csv"


def validate_classification_dataset(
    data: bytes,
    *,
    filename: str | None = None,
    fmt: Literal["jsonl", "csv"] | None = None,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_CLASSIFICATION_TEMPLATE,
    count_tokens: TokenCounter | None = None,
    max_tokens: int | None = None,
    strict: bool = False,
) -> ValidationReport:
    """Validate a classification file (JSONL or CSV ``text``, ``label``).

    ``labels`` restricts the label set (e.g. a validation file must use the training labels);
    token counts are of the templated conversation ending with the label, as trained. Texts are
    compared ignoring case and spacing: a repeat with the same label is a warning and dropped; with
    another label a warning and dropped (the first line's label kept), an issue when ``strict``.
    """
    issues: list[DatasetIssue] = []
    warnings: list[DatasetIssue] = []
    duplicates = conflicts = 0
    fmt = fmt or sniff_format(data, filename)
    parsed: list[ClassificationExample] = []
    first_seen: dict[str, tuple[int, str]] = {}
    allowed = set(labels) if labels is not None else None
    for line, text, label in _classification_records(data, fmt, issues):
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        problems = []
        if not isinstance(text, str) or not text.strip():
            problems.append("empty text" if isinstance(text, str) or text is None
                            else '"text" must be a string')
        if not isinstance(label, str) or not label.strip():
            problems.append("empty label" if isinstance(label, str) or label is None
                            else '"label" must be a string')
        elif label != label.strip():
            problems.append(f"label {label!r} has leading or trailing spaces")
        elif allowed is not None and label not in allowed:
            problems.append(f"unknown label {label!r}; expected one of {sorted(allowed)}")
        if problems:
            issues.extend(DatasetIssue(line, p) for p in problems)
            continue
        key = " ".join(text.split()).lower()
        if key in first_seen:
            first_line, first_label = first_seen[key]
            if first_label == label:
                duplicates += 1
                warnings.append(DatasetIssue(
                    line, f"duplicate of line {first_line}; dropped, trained once"))
            elif strict:
                issues.append(DatasetIssue(
                    line, f"duplicate text of line {first_line} with a different label "
                          f"({first_label!r}); give one text one label (strict validation)"))
            else:
                conflicts += 1
                warnings.append(DatasetIssue(
                    line, f"same text as line {first_line} with a different label ({label!r} vs "
                          f"{first_label!r}); dropped, line {first_line}'s label kept"))
            continue
        first_seen[key] = (line, label)
        parsed.append(ClassificationExample(text=text, label=label, line=line))
    label_counts = dict(sorted(Counter(e.label for e in parsed).items()))
    if not parsed and not issues:
        issues.append(DatasetIssue(None, "the file has no examples"))
    elif parsed and len(label_counts) < 2 and labels is None:
        issues.append(DatasetIssue(
            None, f"only one label ({next(iter(label_counts))!r}); a classifier needs at least two"))
    label_list = list(labels) if labels is not None else sorted(label_counts)
    counts: list[int] = []
    if count_tokens is not None:
        kept = []
        for example in parsed:
            messages = classification_messages(template, example.text, label_list)
            messages = messages + [{"role": "assistant", "content": example.label}]
            if _check_length(example.line, messages, count_tokens, max_tokens, issues, counts):
                kept.append(example)
        parsed = kept
        label_counts = dict(sorted(Counter(e.label for e in parsed).items()))
    stats = DatasetStats(
        task=AdapterTask.CLASSIFICATION, examples=len(parsed), sha256=content_hash(data),
        tokens=sum(counts) if count_tokens else None,
        max_example_tokens=max(counts, default=0) if count_tokens else None,
        label_counts=label_counts, duplicates=duplicates, conflicting_labels=conflicts,
        warnings=tuple(warnings[:MAX_STORED_WARNINGS]),
    )
    return ValidationReport(
        AdapterTask.CLASSIFICATION, parsed, sorted(issues, key=_issue_order), stats,
        labels=label_list, warnings=warnings,
    )


def validate_dataset(data: bytes, task: AdapterTask, **kwargs: Any) -> ValidationReport:
    """Dispatch to the chat or classification validator by ``task``. ``strict=True`` refuses a
    classification text repeated with another label (an issue, not a warning); chat has no
    such conflict (several replies to one prompt are normal) and ignores it."""
    if task == AdapterTask.CHAT:
        kwargs.pop("strict", None)
        return validate_chat_dataset(data, **kwargs)
    if task == AdapterTask.CLASSIFICATION:
        return validate_classification_dataset(data, **kwargs)
    raise ValueError(f"unknown task {task!r}; use 'chat' or 'classification'")


def _issue_order(issue: DatasetIssue) -> tuple[int, int]:
    return (0, 0) if issue.line is None else (1, issue.line)
