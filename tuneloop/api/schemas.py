"""Request and response bodies of the admin and registry routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Lowercase letters, digits and '-'.")


class TenantOut(BaseModel):
    object: str = "tenant"
    name: str
    state: str
    created_at: datetime


class KeyOut(BaseModel):
    object: str = "api_key"
    id: int
    tenant: str
    prefix: str
    key: str | None = Field(default=None, description="Only present in the create response.")
    created_at: datetime | None = None
    revoked_at: datetime | None = None


class VersionOut(BaseModel):
    object: str = "adapter.version"
    id: str
    version: int
    state: str
    task: str
    labels: list[str] | None
    prompt_template: str | None
    rank: int
    size_bytes: int
    base_fingerprint: str
    metrics: dict
    lineage: dict
    failure: str | None = None  # why the version is failed (e.g. the engine refused to load it)
    created_at: datetime


class ChampionChangeOut(BaseModel):
    action: str
    from_version: int | None
    to_version: int
    reason: str | None
    created_at: datetime


class AdapterOut(BaseModel):
    object: str = "adapter"
    id: str
    name: str
    task: str
    champion: str | None
    champion_version: int | None
    versions: list[VersionOut]
    history: list[ChampionChangeOut] = []
    created_at: datetime


class ListOut(BaseModel):
    object: str = "list"
    data: list


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1)  # services.registry.MAX_VERSION (INTEGER column)
    reason: str | None = None


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = None


class DeletedOut(BaseModel):
    """A delete's answer, as OpenAI's (``files.delete``, ``models.delete``)."""

    id: str
    object: str
    deleted: bool = True
    rows: dict[str, int] | None = Field(
        default=None, description="Rows deleted per table (tenant and adapter deletes).")
