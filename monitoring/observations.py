"""What the monitor reads about one adapter: its champion's training data (the drift reference and
the previous eval split), the window of recent production inputs, feedback quality counts, new
examples, and the request log + feedback the dataset compiler needs.

Each function reads the store (or the artifact store) and returns plain data for the pure core
in :mod:`monitoring.drift`, :mod:`monitoring.quality`, :mod:`monitoring.compiler`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from monitoring.compiler import ResponseFeedback, ServedResponse
from services.platform import Platform
from services.store.models import (
    Adapter,
    AdapterTask,
    AdapterVersion,
    ChampionChange,
    DatasetFile,
    FeedbackRecord,
    RequestRecord,
)
from training.datasets import ChatExample, ClassificationExample, validate_dataset
from training.evaluation import hash_split
from training.jobs.store import as_utc

SERVED_ROUTES = ("classify", "chat", "completions")


@dataclass(frozen=True)
class VersionData:
    """A version's training examples (``train``) and the split it was evaluated on (``eval``),
    as training-format records; ``source`` says where they came from."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    source: str


@dataclass(frozen=True)
class Window:
    """Recent production inputs of an adapter (newest first) and the labels it predicted."""

    texts: list[str]
    labels: list[str]
    requests: int
    newest: datetime | None = None


@dataclass(frozen=True)
class QualityCounts:
    correct: int = 0
    labeled: int = 0
    negative: int = 0
    rated: int = 0
    details: dict[str, Any] = field(default_factory=dict)


# -- the champion ------------------------------------------------------------------------------


def champion(session: Session, adapter: Adapter) -> tuple[AdapterVersion | None, datetime | None]:
    """(champion version, when it last became champion)."""
    if adapter.champion_version_id is None:
        return None, None
    version = session.get_one(AdapterVersion, adapter.champion_version_id)
    since = session.scalar(
        select(func.max(ChampionChange.created_at)).where(
            ChampionChange.adapter_id == adapter.id,
            ChampionChange.to_version_id == adapter.champion_version_id))
    return version, as_utc(since or version.created_at)


def _records(data: bytes, task: str, filename: str) -> list[dict[str, Any]]:
    report = validate_dataset(data, AdapterTask(task),
                              **({"filename": filename} if task != AdapterTask.CHAT else {}))
    if task == AdapterTask.CHAT:
        return [{"messages": list(e.messages)}
                for e in cast("list[ChatExample]", report.examples)]
    return [{"text": e.text, "label": e.label}
            for e in cast("list[ClassificationExample]", report.examples)]


def file_records(platform: Platform, session: Session, file_id: str | None, task: str
                  ) -> list[dict[str, Any]] | None:
    row = session.get(DatasetFile, file_id) if file_id else None
    if row is None:
        return None
    return _records(platform.artifacts.get_bytes(row.sha256), task, row.filename)


def _recipe_key(record: dict[str, Any]) -> str:
    # The recipe's split key (training/recipe.py): the text, or the conversation as JSON.
    if "messages" in record:
        return json.dumps(ChatExample(record["messages"]).messages, sort_keys=True,
                          ensure_ascii=False)
    return record["text"]


def version_data(platform: Platform, session: Session, version: AdapterVersion) -> VersionData:
    """The version's training file and its eval split: the validation file of its lineage, else
    the recipe's hash split of the training file (what the recipe held out). Empty when the
    version has no training file in its lineage (registered from outside)."""
    lineage = version.lineage or {}
    train_ref = lineage.get("training_file") or {}
    valid_ref = lineage.get("validation_file") or {}
    train = file_records(platform, session, train_ref.get("id"), version.task)
    if train is None:
        return VersionData([], [], "none")
    held_out = file_records(platform, session, valid_ref.get("id"), version.task)
    if held_out is not None:
        return VersionData(train, held_out, "validation_file")
    hyper = lineage.get("hyperparameters") or {}
    fraction = float(hyper.get("eval_fraction") or 0.1)
    kept, held_out = hash_split(train, _recipe_key, fraction)
    return VersionData(kept, held_out, "hash_split")


def input_text(value: Any) -> str | None:
    """The text a drift test sees for one logged input: the classify text, the prompt, or the
    last user message of a chat."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users and isinstance(users[-1], str) else None
    return None


def reference(data: VersionData) -> tuple[list[str], list[str]]:
    """(texts, labels) of the training examples: the drift test's reference sample."""
    texts, labels = [], []
    for record in data.train:
        if "messages" in record:
            text = input_text(record["messages"][:-1] or record["messages"])
        else:
            text = record["text"]
            labels.append(record["label"])
        if text:
            texts.append(text)
    return texts, labels


def predicted_label_counts(version: AdapterVersion) -> dict[str, int] | None:
    """How often the version predicted each label on its held-out split (the column sums of the
    confusion matrix its training job measured), or None when the job left no confusion matrix.

    This is the prediction-drift reference: comparing production predictions with the *true*
    training labels would flag any champion whose predictions are biased, drift or not.
    """
    confusion = (((version.metrics or {}).get("eval") or {}).get("adapter") or {}).get("confusion")
    if not isinstance(confusion, dict) or not confusion:
        return None
    counts: dict[str, int] = {}
    for row in confusion.values():
        for label, n in (row or {}).items():
            counts[label] = counts.get(label, 0) + int(n)
    return counts if sum(counts.values()) else None


# -- production traffic ------------------------------------------------------------------------


def _adapter_requests(adapter: Adapter) -> Select[RequestRecord]:
    return select(RequestRecord).where(
        RequestRecord.tenant_id == adapter.tenant_id, RequestRecord.adapter == adapter.name,
        RequestRecord.status == 200, RequestRecord.route.in_(SERVED_ROUTES))


def window(session: Session, adapter: Adapter, since: datetime | None, size: int) -> Window:
    """The newest ``size`` inputs (classify batches count per text) served since ``since``."""
    stmt = _adapter_requests(adapter)
    if since is not None:
        stmt = stmt.where(RequestRecord.created_at >= since)
    rows = session.scalars(stmt.order_by(RequestRecord.created_at.desc(), RequestRecord.id.desc())
                           .limit(size)).all()
    texts, labels = [], []
    for row in rows:
        if row.route == "classify" and isinstance(row.input, list):
            outputs = row.output if isinstance(row.output, list) else []
            texts += [t for t in row.input if isinstance(t, str)]
            labels += [o for o in outputs if isinstance(o, str)]
            continue
        text = input_text(row.input)
        if text:
            texts.append(text)
        if row.route == "classify" and isinstance(row.output, str):
            labels.append(row.output)
    newest = as_utc(rows[0].created_at) if rows else None
    return Window(texts[:size], labels[:size], len(rows), newest)


def requests_after(session: Session, adapter: Adapter, after: datetime | None) -> int:
    """Logged responses of the adapter newer than ``after`` (all when None)."""
    stmt = _adapter_requests(adapter)
    if after is not None:
        stmt = stmt.where(RequestRecord.created_at > after)
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


# -- feedback ----------------------------------------------------------------------------------


def _latest_per_response(pairs: Iterable[tuple[FeedbackRecord, RequestRecord]]
                         ) -> dict[str, tuple[dict[str, Any], RequestRecord]]:
    """The newest value of each feedback field per response (like the dataset compiler)."""
    merged: dict[str, tuple[dict[str, Any], RequestRecord]] = {}
    for fb, request in sorted(pairs, key=lambda p: (as_utc(p[0].created_at), p[0].id)):
        fields, _ = merged.setdefault(fb.response_id, ({}, request))
        for name in ("rating", "label", "correction"):
            value = getattr(fb, name)
            if value is not None:
                fields[name] = value
    return merged


def quality_counts(session: Session, adapter: Adapter, version: int, since: datetime | None,
                   limit: int = 1000) -> QualityCounts:
    """Accuracy and negative-rating counts of feedback on responses served by ``version`` since
    ``since`` (the newest ``limit`` feedback records)."""
    stmt = (select(FeedbackRecord, RequestRecord)
            .join(RequestRecord, RequestRecord.id == FeedbackRecord.response_id)
            .where(FeedbackRecord.tenant_id == adapter.tenant_id,
                   FeedbackRecord.adapter == adapter.name,
                   FeedbackRecord.adapter_version == version))
    if since is not None:
        stmt = stmt.where(FeedbackRecord.created_at >= since)
    pairs = session.execute(stmt.order_by(FeedbackRecord.created_at.desc()).limit(limit)).all()
    correct = labeled = negative = rated = 0
    for fields, request in _latest_per_response(pairs).values():
        if fields.get("label") is not None and isinstance(request.output, str):
            labeled += 1
            correct += fields["label"] == request.output
        if fields.get("rating") is not None:
            rated += 1
            negative += fields["rating"] == -1
    return QualityCounts(correct, labeled, negative, rated, {"feedback_records": len(pairs)})


def _usable() -> ColumnElement[bool]:
    return or_(FeedbackRecord.label.is_not(None), FeedbackRecord.correction.is_not(None),
               FeedbackRecord.rating == 1)


def new_examples(session: Session, adapter: Adapter, after: datetime | None) -> int:
    """Responses of this adapter that got usable feedback (label, correction, +1) after ``after``."""
    stmt = select(func.count(func.distinct(FeedbackRecord.response_id))).where(
        FeedbackRecord.tenant_id == adapter.tenant_id, FeedbackRecord.adapter == adapter.name,
        _usable())
    if after is not None:
        stmt = stmt.where(FeedbackRecord.created_at > after)
    return int(session.scalar(stmt) or 0)


def compile_inputs(session: Session, adapter: Adapter, batch: int = 500
                   ) -> tuple[list[ServedResponse], list[ResponseFeedback]]:
    """Every feedback record of the adapter and the logged responses it refers to, as the
    dataset compiler's records (classify batches are skipped: one label cannot name a text)."""
    rows = session.scalars(select(FeedbackRecord).where(
        FeedbackRecord.tenant_id == adapter.tenant_id,
        FeedbackRecord.adapter == adapter.name)).all()
    ids = sorted({r.response_id for r in rows})
    requests: list[ServedResponse] = []
    for start in range(0, len(ids), batch):
        chunk = session.scalars(select(RequestRecord).where(
            RequestRecord.id.in_(ids[start:start + batch]),
            RequestRecord.tenant_id == adapter.tenant_id)).all()
        for row in chunk:
            if row.route == "classify" and not isinstance(row.input, str):
                continue
            output = row.output if isinstance(row.output, str) else None
            # Logged inputs are the text (classify) or the chat messages (chat).
            text_or_messages = cast("str | list[dict[str, Any]]", row.input)
            requests.append(ServedResponse(row.id, AdapterTask(adapter.task), text_or_messages,
                                           output))
    feedback = [ResponseFeedback(response_id=r.response_id, rating=r.rating, label=r.label,
                                correction=r.correction, comment=r.comment, id=r.id,
                                created_at=as_utc(r.created_at)) for r in rows]
    return requests, feedback
