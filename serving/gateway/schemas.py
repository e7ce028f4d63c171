"""Gateway request bodies. Only what the gateway itself relies on is validated here; the other
OpenAI parameters (temperature, top_p, stop, n, seed, logprobs, ...) pass through to the engine,
which validates them and whose 400s are returned as they are. Only known parameters pass: an
engine accepts more (per-request chat templates, guided-decoding regexes, multimodal URLs it
would fetch from inside the cluster), and none of that is a tenant's to set."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SAMPLING = frozenset({
    "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty", "seed",
    "stop", "stream", "stream_options", "temperature", "top_p", "user",
    # vLLM's sampling extras that only change sampling
    "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
    "skip_special_tokens", "include_stop_str_in_output",
})
CHAT_PARAMS = _SAMPLING | {
    "model", "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "metadata", "store",
}
COMPLETION_PARAMS = _SAMPLING | {"model", "prompt", "echo", "suffix", "best_of"}
MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal"})


def _only_known(body: Any, allowed: frozenset[str], what: str) -> Any:
    if isinstance(body, dict):
        unknown = sorted(k for k in body if k not in allowed)
        if unknown:
            raise ValueError(f"unsupported {what} parameter(s) {', '.join(map(repr, unknown[:5]))};"
                             f" supported: {', '.join(sorted(allowed))}")
    return body


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _only_known(value, MESSAGE_FIELDS, "message")

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list | None) -> str | list | None:
        if isinstance(value, list):
            for part in value:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                        part.get("text"), str) or set(part) - {"type", "text"}:
                    raise ValueError("only text content parts ({\"type\": \"text\", \"text\": "
                                     "...}) are supported; send images or files as text")
        return value

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

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _only_known(value, CHAT_PARAMS, "chat")

    def sequences(self) -> tuple[int, str]:
        """(sequences the engine runs for this request, how they were counted): admission's
        weight."""
        return self.n, f"n={self.n}"


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)
    best_of: int | None = Field(default=None, ge=1, le=16)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        value = _only_known(value, COMPLETION_PARAMS, "completions")
        if isinstance(value, dict) and value.get("echo") and value.get("logprobs") is not None:
            # Prompt log-probabilities: vLLM's CPU LoRA kernels kill the whole engine (every
            # tenant's requests) when such a request shares a batch with another one.
            raise ValueError("echo=true with logprobs (log-probabilities of the prompt tokens) "
                             "is not supported; send echo without logprobs, or logprobs "
                             "without echo")
        return value

    def sequences(self) -> tuple[int, str]:
        """(prompts x max(n, best_of), how they were counted): admission's weight."""
        prompt = self.prompt
        prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(
            prompt[0], int) else 1
        if self.best_of is not None and self.best_of > self.n:
            return prompts * self.best_of, f"{prompts} prompts x best_of={self.best_of}"
        return prompts * self.n, f"{prompts} prompts x n={self.n}"


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

    def sequences(self) -> tuple[int, str]:
        """(texts, how they were counted): admission's weight (one engine prefill per text)."""
        texts = 1 if isinstance(self.input, str) else len(self.input)
        return texts, f"{texts} texts"
