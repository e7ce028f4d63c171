"""The adapter registry: immutable versions of (tenant, name), a champion pointer, history.

Every function takes a SQLAlchemy session and the caller's tenant: an adapter of another tenant
is indistinguishable from one that does not exist (NotFound).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.adapter_validation import AdapterInfo
from services.errors import Conflict, InvalidInput, NotFound
from services.labels import MAX_LABEL_CHARS, MAX_LABELS, check_labels
from services.names import NameKind, check_name
from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE, validate_template
from services.store.models import (
    Adapter,
    AdapterTask,
    AdapterVersion,
    ChampionAction,
    ChampionChange,
    Tenant,
    VersionState,
)

MAX_VERSION = 2**31 - 1
"""Largest version number (the store's INTEGER column); a larger one cannot exist."""
_REF_RE = re.compile(r"(?P<name>[^@]+?)(?:@v?(?P<version>[0-9]+))?")


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``"name"`` -> (name, None) (the champion); ``"name@v3"`` or ``"name@3"`` -> (name, 3)."""
    match = _REF_RE.fullmatch(ref or "")
    if not match:
        raise InvalidInput(f"model {str(ref)[:100]!r} is not 'name' or 'name@vN'", param="model")
    version = match.group("version")
    if version and (len(version) > 10 or int(version) > MAX_VERSION):
        raise InvalidInput(f"model {str(ref)[:100]!r} has a version beyond {MAX_VERSION}; "
                           "use an existing version number", param="model")
    return match.group("name"), int(version) if version else None


def version_ref(name: str, version: int) -> str:
    return f"{name}@v{version}"


def engine_adapter_name(tenant: str, name: str, version: int) -> str:
    """The name an engine knows a version by; unique per version so it is never reused."""
    return f"{tenant}.{name}.v{version}"


@dataclass(frozen=True)
class ResolvedAdapter:
    """What serving needs to route a request to one adapter version."""

    tenant: str
    name: str
    version: int
    version_id: int
    task: str
    labels: list[str] | None
    prompt_template: str | None
    artifact_key: str

    @property
    def ref(self) -> str:
        return version_ref(self.name, self.version)

    @property
    def engine_name(self) -> str:
        return engine_adapter_name(self.tenant, self.name, self.version)


def _adapter(session: Session, tenant: Tenant, name: str, *, lock: bool = False) -> Adapter:
    stmt = select(Adapter).where(Adapter.tenant_id == tenant.id, Adapter.name == name)
    if lock:
        stmt = stmt.with_for_update()
    adapter = session.scalar(stmt)
    if adapter is None:
        raise NotFound(f"adapter {name!r} does not exist", param="model", code="model_not_found")
    return adapter


def _version(session: Session, adapter: Adapter, version: int) -> AdapterVersion:
    if not 0 <= version <= MAX_VERSION:  # the store cannot even compare it (integer overflow)
        raise NotFound(f"adapter {adapter.name!r} has no version outside 0..{MAX_VERSION}",
                       param="model", code="model_not_found")
    row = session.scalar(
        select(AdapterVersion).where(
            AdapterVersion.adapter_id == adapter.id, AdapterVersion.version == version
        )
    )
    if row is None:
        raise NotFound(
            f"adapter {adapter.name!r} has no version {version}", param="model", code="model_not_found"
        )
    return row


def check_classification_spec(
    task: str, labels: list[str] | None, prompt_template: str | None, *,
    max_labels: int | None = MAX_LABELS, max_label_chars: int | None = MAX_LABEL_CHARS,
) -> tuple[list[str] | None, str | None]:
    """Normalise and validate task-specific fields; returns (labels, template). The label caps
    default to those of the default settings; None leaves them unchecked."""
    if task not in (AdapterTask.CHAT, AdapterTask.CLASSIFICATION):
        raise InvalidInput(f"task {task!r} is invalid; use 'chat' or 'classification'", param="task")
    if task == AdapterTask.CHAT:
        return None, None
    labels = check_labels(labels, max_count=max_labels, max_chars=max_label_chars)
    template = prompt_template or DEFAULT_CLASSIFICATION_TEMPLATE
    try:
        validate_template(template)
    except ValueError as exc:
        raise InvalidInput(str(exc), param="prompt_template") from exc
    return labels, template


@dataclass(frozen=True)
class NewVersion:
    """What :func:`register_version` stores: the validated adapter and its description."""

    info: AdapterInfo
    artifact_key: str
    base_fingerprint: str
    task: str
    labels: list[str] | None = None
    prompt_template: str | None = None
    metrics: dict | None = None
    lineage: dict | None = None
    state: VersionState = VersionState.READY


def register_version(session: Session, tenant: Tenant, name: str,
                     new: NewVersion) -> AdapterVersion:
    """Add version N+1 of (tenant, name); the first ready version becomes the champion."""
    check_name(name, NameKind.ADAPTER)
    task, info, state = new.task, new.info, new.state
    # The caps were checked by the caller with the operator's settings; this only normalises.
    labels, prompt_template = check_classification_spec(
        task, new.labels, new.prompt_template, max_labels=None, max_label_chars=None)
    adapter = session.scalar(
        select(Adapter).where(Adapter.tenant_id == tenant.id, Adapter.name == name).with_for_update()
    )
    if adapter is None:
        adapter = Adapter(tenant_id=tenant.id, name=name, task=task)
        session.add(adapter)
        try:
            session.flush()
        except IntegrityError as exc:  # a concurrent first registration won; caller may retry
            raise Conflict(f"adapter {name!r} was created concurrently; retry") from exc
    elif adapter.task != task:
        raise InvalidInput(
            f"adapter {name!r} is a {adapter.task} adapter; register a {task} adapter under "
            "another name",
            param="task",
        )
    latest = session.scalar(
        select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == adapter.id)
    )
    # Numbers of deleted versions are not given again (their engine-side names stay unique).
    number = max(latest or 0, adapter.last_version or 0) + 1
    adapter.last_version = number
    row = AdapterVersion(
        adapter_id=adapter.id,
        version=number,
        state=state,
        task=task,
        labels=labels,
        prompt_template=prompt_template,
        rank=info.rank,
        base_fingerprint=new.base_fingerprint,
        artifact_key=new.artifact_key,
        size_bytes=info.size_bytes,
        metrics=new.metrics or {},
        lineage=new.lineage or {},
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"version {row.version} of {name!r} was registered concurrently; retry") from exc
    if adapter.champion_version_id is None and state == VersionState.READY:
        _switch(session, adapter, row, ChampionAction.PROMOTE, "first version")
    return row


def set_version_state(session: Session, version: AdapterVersion, state: VersionState) -> None:
    """Set ``version``'s state; a version that becomes READY while its adapter has no champion
    becomes the champion (as a first version registered READY does)."""
    version.state = state
    if state != VersionState.READY:
        return
    adapter = session.scalar(
        select(Adapter).where(Adapter.id == version.adapter_id).with_for_update()
    )
    if adapter is not None and adapter.champion_version_id is None:
        _switch(session, adapter, version, ChampionAction.PROMOTE, "first ready version")


FAILURE_CHARS = 2000
"""How much of a failure's reason is kept with the version."""


def fail_version(session: Session, version_id: int, reason: str) -> AdapterVersion | None:
    """Mark a servable or pending version FAILED with ``reason`` (kept, truncated); None when
    it is gone or already terminal. Its alias keeps pointing at it (requests for the alias then
    answer 404 naming the reason) until someone rolls back or promotes another version."""
    row = session.get(AdapterVersion, version_id, with_for_update=True)
    if row is None or row.state.is_terminal:
        return None
    row.state = VersionState.FAILED
    row.failure = reason[:FAILURE_CHARS]
    return row


def list_adapters(session: Session, tenant: Tenant) -> list[Adapter]:
    return list(session.scalars(select(Adapter).where(Adapter.tenant_id == tenant.id).order_by(Adapter.name)))


def versions_by_adapter(session: Session, adapters: list[Adapter]) -> dict[int, list[AdapterVersion]]:
    """Every version of ``adapters`` in one query, oldest first per adapter."""
    found: dict[int, list[AdapterVersion]] = {a.id: [] for a in adapters}
    if found:
        rows = session.scalars(select(AdapterVersion)
                               .where(AdapterVersion.adapter_id.in_(list(found)))
                               .order_by(AdapterVersion.adapter_id, AdapterVersion.version))
        for row in rows:
            found[row.adapter_id].append(row)
    return found


def get_adapter(session: Session, tenant: Tenant, name: str, *, lock: bool = False) -> Adapter:
    """The tenant's adapter ``name`` (NotFound otherwise); ``lock``: the row is locked until
    the transaction ends (promotes, rollbacks and deletes of it wait)."""
    return _adapter(session, tenant, name, lock=lock)


def list_versions(session: Session, adapter: Adapter) -> list[AdapterVersion]:
    return list(
        session.scalars(
            select(AdapterVersion)
            .where(AdapterVersion.adapter_id == adapter.id)
            .order_by(AdapterVersion.version)
        )
    )


def champion_history(session: Session, adapter: Adapter) -> list[ChampionChange]:
    return list(
        session.scalars(
            select(ChampionChange)
            .where(ChampionChange.adapter_id == adapter.id)
            .order_by(ChampionChange.id)
        )
    )


def get_version(session: Session, tenant: Tenant, name: str, version: int) -> AdapterVersion:
    return _version(session, _adapter(session, tenant, name), version)


def resolve(session: Session, tenant: Tenant, ref: str) -> ResolvedAdapter:
    """``name`` -> its champion, ``name@vN`` -> that version; only servable versions resolve."""
    name, number = parse_model_ref(ref)
    adapter = _adapter(session, tenant, name)
    if number is None:
        if adapter.champion_version_id is None:
            raise NotFound(
                f"adapter {name!r} has no champion version yet; promote one or call {name}@vN",
                param="model",
                code="model_not_found",
            )
        row = session.get_one(AdapterVersion, adapter.champion_version_id)
    else:
        row = _version(session, adapter, number)
    if row.state != VersionState.READY:
        why = f" ({row.failure})" if row.failure else ""
        fix = (f"; roll back (POST /v1/adapters/{name}/rollback) or register a fixed version"
               if row.state == VersionState.FAILED else "")
        raise NotFound(
            f"{version_ref(name, row.version)} is {row.state}, not servable{why}{fix}",
            param="model",
            code="model_not_found",
        )
    return ResolvedAdapter(
        tenant=tenant.name,
        name=name,
        version=row.version,
        version_id=row.id,
        task=row.task,
        labels=row.labels,
        prompt_template=row.prompt_template,
        artifact_key=row.artifact_key,
    )


def _switch(
    session: Session, adapter: Adapter, to: AdapterVersion, action: ChampionAction, reason: str | None
) -> ChampionChange:
    change = ChampionChange(
        adapter_id=adapter.id,
        from_version_id=adapter.champion_version_id,
        to_version_id=to.id,
        action=action,
        reason=reason,
    )
    adapter.champion_version_id = to.id
    session.add(change)
    session.flush()
    return change


def promote(
    session: Session, tenant: Tenant, name: str, version: int, reason: str | None = None
) -> AdapterVersion:
    """Make ``version`` the champion. The adapter row is locked, so concurrent promotes serialize."""
    adapter = _adapter(session, tenant, name, lock=True)
    row = _version(session, adapter, version)
    if row.state != VersionState.READY:
        raise Conflict(f"{version_ref(name, version)} is {row.state}; only ready versions can be promoted")
    if adapter.champion_version_id != row.id:
        _switch(session, adapter, row, ChampionAction.PROMOTE, reason)
    return row


def rollback_target(session: Session, tenant: Tenant, name: str) -> AdapterVersion:
    """The version a rollback would switch to: the champion before the current one."""
    adapter = _adapter(session, tenant, name)
    return _rollback_target(session, adapter)


def _rollback_target(session: Session, adapter: Adapter) -> AdapterVersion:
    history = champion_history(session, adapter)
    current = adapter.champion_version_id
    # Walk back past entries that switched *to* the current champion.
    for change in reversed(history):
        if change.to_version_id == current and change.from_version_id not in (None, current):
            previous = session.get(AdapterVersion, change.from_version_id)
            if previous is not None and previous.state == VersionState.READY:
                return previous
    raise Conflict(f"adapter {adapter.name!r} has no previous champion to roll back to")


def rollback(session: Session, tenant: Tenant, name: str, reason: str | None = None) -> AdapterVersion:
    adapter = _adapter(session, tenant, name, lock=True)
    target = _rollback_target(session, adapter)
    _switch(session, adapter, target, ChampionAction.ROLLBACK, reason)
    return target
