"""Gateway request bodies. Only what the gateway itself relies on is validated here; the other
OpenAI parameters (temperature, top_p, stop, n, seed, logprobs, ...) pass through to the engine,
which validates them and whose 400s are returned as they are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("system", "user", "assistant", "tool", "developer"):
            raise ValueError(f"unknown role {value!r}; use system, user, assistant or tool")
        return value


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    input: str | list[str]

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("input must be a string or a non-empty list of strings")
        if len(items) > 256:
            raise ValueError(f"input has {len(items)} texts; at most 256 per request")
        if any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("every input text must be a non-empty string")
        return value
