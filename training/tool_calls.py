"""OpenAI's tool-calling format in chat datasets: validation and how it is trained.

Assistant messages may carry ``tool_calls`` (content may then be null), ``tool`` messages answer
a call by ``tool_call_id``, and an example may list its ``tools``. Every size and depth is bounded
before the work it causes. The base chat template renders only role and content, so
:func:`render_tool_messages` writes each call into the assistant text in the Hermes format that
vLLM's ``hermes`` tool parser reads back (``<tool_call>\n{"name": ..., "arguments": {...}}\n
</tool_call>``) and keeps ``tool`` messages as role ``tool``, as the engine's template renders
them; ``tools`` is not rendered (the template ignores it when serving too).
"""

from __future__ import annotations

import json
import re
from typing import Any

Message = dict[str, Any]

MAX_TOOL_CALLS = 32
"""Tool calls one assistant message may make."""
MAX_TOOLS = 128
"""Entries of an example's ``tools`` list (OpenAI's limit)."""
MAX_NESTING = 32
"""JSON depth allowed in a ``tools`` entry and in a call's arguments."""
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def json_object(text: str) -> dict | None:
    """``text`` parsed when it is a JSON object nested at most :data:`MAX_NESTING` deep."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) and not too_deep(value) else None


def tool_call_issues(where: str, calls: Any, known: set[str] | None) -> tuple[list[str], list[str]]:
    """Problems of an assistant's ``tool_calls`` and the ids it declares."""
    if not isinstance(calls, list) or not calls:
        return [f'{where} "tool_calls" must be a non-empty list of {{"id", "type": "function", '
                '"function": {"name", "arguments"}} objects'], []
    if len(calls) > MAX_TOOL_CALLS:
        return [f"{where} has {len(calls)} tool calls; at most {MAX_TOOL_CALLS} per message"], []
    problems, ids = [], []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            problems.append(f"{at} is not an object")
            continue
        if not isinstance(call.get("id"), str) or not call["id"].strip():
            problems.append(f'{at} needs an "id" string (tool messages answer it by tool_call_id)')
        else:
            ids.append(call["id"])
        if call.get("type", "function") != "function":
            problems.append(f'{at} "type" must be "function"')
        function = call.get("function")
        if not isinstance(function, dict):
            problems.append(f'{at} needs a "function" object with "name" and "arguments"')
            continue
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
            problems.append(f'{at} "function.name" must be 1-64 letters, digits, _ or -')
        elif known is not None and name not in known:
            problems.append(f"{at} calls {name!r}, which is not in the example's \"tools\"")
        if not isinstance(arguments, str) or json_object(arguments) is None:
            problems.append(f'{at} "function.arguments" must be a string holding a JSON object '
                            f'(nested at most {MAX_NESTING} deep), e.g. "{{\\"city\\": \\"Paris\\"}}"')
    return problems, ids


def tools_issues(tools: Any) -> tuple[list[str], set[str] | None]:
    """Problems of an example's top-level ``tools`` list and the function names it defines."""
    if tools is None:
        return [], None
    if not isinstance(tools, list):
        return ['"tools" must be a list of {"type": "function", "function": {"name", ...}}'], None
    if len(tools) > MAX_TOOLS:
        return [f'"tools" has {len(tools)} entries; at most {MAX_TOOLS}'], None
    problems, names = [], set()
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            problems.append(f'tools[{k}] must be {{"type": "function", "function": {{...}}}}')
        elif not isinstance(function.get("name"), str) or not FUNCTION_NAME.fullmatch(function["name"]):
            problems.append(f'tools[{k}] "function.name" must be 1-64 letters, digits, _ or -')
        elif too_deep(tool):
            problems.append(f"tools[{k}] nests deeper than {MAX_NESTING} levels")
        else:
            names.add(function["name"])
    return problems, names


def render_tool_messages(messages: list[Message]) -> list[Message]:
    """Validated messages as the chat template renders them: ``role`` and ``content`` (and
    ``weight``); an assistant's tool calls appended to its text as Hermes ``<tool_call>`` blocks
    (arguments re-serialized, so the text is deterministic), ``tool`` messages as role ``tool``."""
    out = []
    for message in messages:
        text = message.get("content") or ""
        calls = message.get("tool_calls") or ()
        if calls and not text.strip():
            text = ""
        for call in calls:
            function = call["function"]
            block = json.dumps({"name": function["name"],
                                "arguments": json.loads(function["arguments"])}, ensure_ascii=False)
            text += ("\n" if text else "") + f"<tool_call>\n{block}\n</tool_call>"
        rendered: Message = {"role": message["role"], "content": text}
        if "weight" in message:
            rendered["weight"] = message["weight"]
        out.append(rendered)
    return out
