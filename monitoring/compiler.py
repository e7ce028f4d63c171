"""Dataset compiler: request log + feedback (+ the champion's data for replay) -> a versioned dataset.

Pure and deterministic: the same records, in any order, give the same dataset and version id.

- classification: a feedback label makes ``{"text", "label"}``; a positive rating confirms the
  predicted label (``use_positive_ratings``); labels outside the adapter's label set are dropped.
- chat: a correction makes ``{"messages": prompt + [assistant: correction]}``; a positively rated
  reply makes the same with the logged reply.
- a negative rating without a correction (or label) teaches nothing certain: excluded, counted.
- when one response has several feedback records, the latest value of each field wins (ordered by
  ``created_at``, then feedback ``id``).
- deduplicated with the same keys as the training validators (classification: text,
  case- and whitespace-insensitive, latest feedback wins; chat: the whole conversation).
- train/eval split by a hash of the example's key, so an example keeps its split across versions.
- replay: a hash-chosen share of the champion's training examples joins the train split.
- version = sha256 of the canonical JSON of both splits. Every example keeps its request id.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from monitoring.request_log import TRUNCATED
from services.store.models import AdapterTask

Split = Literal["train", "eval"]
Source = Literal["label", "rating", "correction", "replay"]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ServedResponse:
    """One logged response: ``input`` is the text (classification) or chat messages (chat);
    ``output`` is the predicted label or the assistant reply."""

    id: str
    task: AdapterTask
    input: str | Sequence[Mapping[str, Any]]
    output: str | None = None


@dataclass(frozen=True)
class ResponseFeedback:
    """Feedback on one response (``POST /v1/feedback``)."""

    response_id: str
    rating: int | None = None
    label: str | None = None
    correction: str | None = None
    comment: str | None = None
    id: str | None = None
    created_at: datetime | str | None = None


@dataclass(frozen=True)
class CompileConfig:
    """Knobs of :func:`compile_dataset`; all part of the result's identity."""

    eval_fraction: float = 0.1
    """Share of new examples that go to the eval split (chosen by hash, stable across versions)."""
    replay_fraction: float = 0.2
    """Share of the champion's training examples replayed into the train split (by hash)."""
    labels: tuple[str, ...] | None = None
    """The adapter's label set; classification labels outside it are dropped and counted."""
    use_positive_ratings: bool = True
    """Turn positively rated responses into examples (chat reply / predicted label)."""
    split_salt: str = ""
    """Changes which examples land in eval; keep it fixed for one adapter."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.replay_fraction <= 1.0:
            raise ValueError(f"replay_fraction must be in [0, 1], got {self.replay_fraction}")


@dataclass(frozen=True)
class CompiledExample:
    """``payload`` is exactly one training-format record; the rest is lineage."""

    payload: dict[str, Any]
    request_id: str | None
    source: Source
    split: Split


@dataclass(frozen=True)
class CompiledDataset:
    task: AdapterTask
    version: str
    train: tuple[CompiledExample, ...]
    eval: tuple[CompiledExample, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def records(self, split: Split) -> list[dict[str, Any]]:
        """The training-format records of one split."""
        return [e.payload for e in (self.train if split == "train" else self.eval)]

    def jsonl(self, split: Split) -> bytes:
        """One split as JSONL bytes, the format the files API and training accept."""
        return "".join(_canonical(r) + "\n" for r in self.records(split)).encode("utf-8")

    def lineage(self) -> list[dict[str, Any]]:
        """Where every example came from: request id, source and split, in dataset order."""
        return [
            {"request_id": e.request_id, "source": e.source, "split": e.split}
            for e in (*self.train, *self.eval)
        ]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _hash_unit(*parts: str) -> float:
    """A stable number in [0, 1) from strings (the first 8 bytes of their sha256)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def example_key(task: AdapterTask, payload: Mapping[str, Any]) -> str:
    """Identity of an example for deduplication, as the training validators define duplicates."""
    if task == AdapterTask.CLASSIFICATION:
        return " ".join(str(payload["text"]).split()).lower()
    return _canonical([[m["role"], m["content"]] for m in payload["messages"]])


def _coerce(cls: type, record: Any) -> Any:
    if isinstance(record, cls):
        return record
    if isinstance(record, Mapping):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})
    raise TypeError(f"expected {cls.__name__} or a mapping, got {type(record).__name__}")


def _time_key(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _feedback_order(fb: ResponseFeedback) -> tuple[str, str, str]:
    return (_time_key(fb.created_at), fb.id or "", _canonical(
        [fb.rating, fb.label, fb.correction, fb.comment]
    ))


def _latest(items: list[ResponseFeedback], name: str) -> tuple[Any, ResponseFeedback | None]:
    for fb in reversed(items):
        value = getattr(fb, name)
        if value is not None and value != "":
            return value, fb
    return None, None


def _prompt_messages(value: str | Sequence[Mapping[str, Any]]) -> list[dict[str, str]] | None:
    """Chat prompt as role/content messages; None if malformed (the example is dropped)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if _whole(value) else None
    messages = []
    for i, message in enumerate(value):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str) or not content.strip():
            return None
        if message.get("truncated"):  # cut by the request log: the prompt is incomplete
            return None
        if role == "system" and i > 0:
            return None
        messages.append({"role": role, "content": content})
    return messages or None


def _whole(text: str) -> bool:
    """A non-blank text that the request log did not cut at its size limit."""
    return bool(text.strip()) and not text.endswith(TRUNCATED)


def _classification_text(value: str | Sequence[Mapping[str, Any]]) -> str | None:
    if isinstance(value, str):
        return value if _whole(value) else None
    users = [m.get("content") for m in value if m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) and _whole(users[-1]) else None


@dataclass
class _Candidate:
    payload: dict[str, Any]
    request_id: str
    source: Source
    order: tuple[str, str, str]


def _candidate(
    task: AdapterTask, request: ServedResponse, items: list[ResponseFeedback], config: CompileConfig,
    counts: Counter[str],
) -> _Candidate | None:
    rating, rating_fb = _latest(items, "rating")
    if task == AdapterTask.CLASSIFICATION:
        text = _classification_text(request.input)
        label, label_fb = _latest(items, "label")
        source: Source = "label"
        if label is None and rating == 1 and config.use_positive_ratings and request.output:
            label, label_fb, source = request.output, rating_fb, "rating"
        if label is None:
            counts["negative_without_label" if rating == -1 else "no_usable_feedback"] += 1
            return None
        label = str(label).strip()
        if config.labels is not None and label not in config.labels:
            counts["label_outside_label_set"] += 1
            return None
        if text is None:
            counts["invalid_input"] += 1
            return None
        assert label_fb is not None  # _latest returns a record with every value
        return _Candidate({"text": text, "label": label}, request.id, source,
                          _feedback_order(label_fb))
    correction, correction_fb = _latest(items, "correction")
    reply, source, decided_by = correction, "correction", correction_fb
    if reply is None and rating == 1 and config.use_positive_ratings and request.output:
        reply, source, decided_by = request.output, "rating", rating_fb
    if reply is None or not str(reply).strip():
        counts["negative_without_correction" if rating == -1 else "no_usable_feedback"] += 1
        return None
    prompt = _prompt_messages(request.input)
    if prompt is None or prompt[-1]["role"] == "assistant":
        counts["invalid_input"] += 1
        return None
    messages = [*prompt, {"role": "assistant", "content": str(reply)}]
    assert decided_by is not None  # _latest returns a record with every value
    return _Candidate({"messages": messages}, request.id, source, _feedback_order(decided_by))


def _replay_examples(
    task: AdapterTask, champion_examples: Iterable[Any], config: CompileConfig, taken: set[str],
    counts: Counter[str],
) -> list[tuple[str, CompiledExample]]:
    chosen = []
    for item in champion_examples:
        if isinstance(item, CompiledExample):
            payload, request_id = item.payload, item.request_id
        else:
            payload = {k: v for k, v in item.items() if k != "request_id"}
            request_id = item.get("request_id")
        key = example_key(task, payload)
        if _hash_unit("replay", config.split_salt, key) >= config.replay_fraction:
            continue
        if key in taken:  # the new example (or a replay twin) wins
            counts["replay_duplicates"] += 1
            continue
        taken.add(key)
        chosen.append((key, CompiledExample(dict(payload), request_id, "replay", "train")))
    return chosen


def compile_dataset(
    task: AdapterTask,
    requests: Iterable[ServedResponse | Mapping[str, Any]],
    feedback: Iterable[ResponseFeedback | Mapping[str, Any]],
    *,
    champion_examples: Iterable[CompiledExample | Mapping[str, Any]] = (),
    config: CompileConfig = CompileConfig(),
) -> CompiledDataset:
    """Compile one adapter's feedback into a dataset of the adapter's ``task``.

    Records may be the dataclasses or plain mappings with the same field names. Requests of the
    other task, feedback on unknown responses and unusable feedback are skipped and counted in
    ``counts``. Raises ValueError for an unknown task.
    """
    if task not in tuple(AdapterTask):
        raise ValueError(f"task must be 'chat' or 'classification', got {task!r}")
    counts: Counter[str] = Counter()
    by_id: dict[str, ServedResponse] = {}
    other_task: set[str] = set()
    for raw in requests:
        request = _coerce(ServedResponse, raw)
        counts["requests"] += 1
        if request.task != task:
            counts["other_task_requests"] += 1
            other_task.add(request.id)
            continue
        by_id[request.id] = request
    grouped: dict[str, list[ResponseFeedback]] = defaultdict(list)
    for raw_fb in feedback:
        fb = _coerce(ResponseFeedback, raw_fb)
        counts["feedback"] += 1
        if fb.response_id not in by_id:
            other = fb.response_id in other_task
            counts["feedback_other_task" if other else "feedback_unknown_response"] += 1
            continue
        grouped[fb.response_id].append(fb)

    best: dict[str, _Candidate] = {}
    for request_id in sorted(grouped):
        items = sorted(grouped[request_id], key=_feedback_order)
        candidate = _candidate(task, by_id[request_id], items, config, counts)
        if candidate is None:
            continue
        counts[f"from_{candidate.source}"] += 1
        key = example_key(task, candidate.payload)
        current = best.get(key)
        if current is None:
            best[key] = candidate
            continue
        counts["duplicates"] += 1
        if current.payload.get("label") != candidate.payload.get("label"):
            counts["conflicts"] += 1  # same text, different labels: the latest feedback wins
        if (candidate.order, candidate.request_id) > (current.order, current.request_id):
            best[key] = candidate

    keyed: list[tuple[str, CompiledExample]] = []
    for key, c in best.items():
        split: Split = (
            "eval" if _hash_unit("split", config.split_salt, key) < config.eval_fraction else "train"
        )
        keyed.append((key, CompiledExample(c.payload, c.request_id, c.source, split)))
    keyed += _replay_examples(task, champion_examples, config, set(best), counts)
    keyed.sort(key=lambda item: hashlib.sha256(item[0].encode("utf-8")).hexdigest())
    train = tuple(e for _, e in keyed if e.split == "train")
    evals = tuple(e for _, e in keyed if e.split == "eval")
    counts["replay"] = sum(e.source == "replay" for e in train)
    counts["train"], counts["eval"] = len(train), len(evals)
    content = {
        "task": task,
        "train": [e.payload for e in train],
        "eval": [e.payload for e in evals],
    }
    version = hashlib.sha256(_canonical(content).encode("utf-8")).hexdigest()
    return CompiledDataset(task, version, train, evals, dict(sorted(counts.items())))
