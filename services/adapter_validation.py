"""Checks a PEFT LoRA adapter directory against the served base model before it is registered.

Reads only safetensors headers (no torch): every LoRA tensor must target a linear weight that
exists in the base with matching shapes; rank within the engine's limit; size within limits.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.errors import InvalidInput, TooLarge

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024


ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
"""What an adapter may carry to the artifact store, engines and trainers; anything else in an
upload (README.md, pickles, tokenizer files) is dropped."""


@dataclass(frozen=True)
class AdapterInfo:
    rank: int
    target_modules: list[str]
    size_bytes: int
    base_model_name_or_path: str | None
    config: dict[str, Any] = field(default_factory=dict)
    """adapter_config.json rebuilt from the known LoRA keys (:func:`clean_adapter_config`)."""


_MAX_CONFIG_STRING = 1024


def _is_str(v: object) -> bool:
    return isinstance(v, str) and len(v) <= _MAX_CONFIG_STRING


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and len(v) <= _MAX_CONFIG_STRING and all(_is_str(x) for x in v)


def _is_pattern(v: object) -> bool:
    return isinstance(v, dict) and len(v) <= _MAX_CONFIG_STRING and all(
        _is_str(k) and _is_number(x) for k, x in v.items())


_OPTIONAL_STR = (lambda v: v is None or _is_str(v), "a string or null")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
# PEFT LoraConfig keys that engines (vLLM) and trainers (PEFT) read, each with its check; other
# keys (auto_mapping naming classes to import, future options) are dropped.
_CONFIG_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "peft_type": (lambda v: isinstance(v, str) and v.upper() == "LORA", '"LORA"'),
    "task_type": _OPTIONAL_STR,
    "r": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "lora_alpha": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "lora_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "target_modules": (lambda v: v is None or _is_str(v) or _is_str_list(v),
                       "a module name or a list of them"),
    "bias": (lambda v: v in ("none", "all", "lora_only"), '"none", "all" or "lora_only"'),
    "fan_in_fan_out": _BOOL,
    "use_rslora": _BOOL,
    "use_dora": _BOOL,
    "lora_bias": _BOOL,
    "inference_mode": _BOOL,
    "init_lora_weights": (lambda v: isinstance(v, bool) or _is_str(v), "true, false or a name"),
    "modules_to_save": (lambda v: v is None or _is_str_list(v), "a list of module names or null"),
    "layers_to_transform": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool))
                            or (isinstance(v, list) and all(type(x) is int for x in v)),
                            "a layer index, a list of them or null"),
    "layers_pattern": (lambda v: v is None or _is_str(v) or _is_str_list(v),
                       "a string, a list of strings or null"),
    "rank_pattern": (_is_pattern, "an object of module name -> number"),
    "alpha_pattern": (_is_pattern, "an object of module name -> number"),
    "base_model_name_or_path": _OPTIONAL_STR,
    "revision": _OPTIONAL_STR,
    "peft_version": _OPTIONAL_STR,
}


def clean_adapter_config(config: dict[str, Any]) -> dict[str, Any]:
    """The known LoRA keys of ``config``, each checked; raises InvalidInput naming a bad one."""
    clean: dict[str, Any] = {}
    for key, (check, expected) in _CONFIG_KEYS.items():
        if key not in config:
            continue
        value = config[key]
        if not check(value):
            raise InvalidInput(
                f"{CONFIG_FILE}: {key} must be {expected}, got {str(value)[:80]!r}; fix it or "
                "save the adapter again with PEFT's save_pretrained"
            )
        clean[key] = value
    clean["peft_type"] = "LORA"
    return clean


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets}; raises InvalidInput when corrupt."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise InvalidInput(f"{path.name} is corrupt: shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length <= 0 or length > min(_MAX_HEADER, size - 8):
            raise InvalidInput(f"{path.name} is corrupt: header length {length} is impossible")
        try:
            header = json.loads(fh.read(length))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInput(f"{path.name} is corrupt: header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise InvalidInput(f"{path.name} is corrupt: header is not an object")
    header.pop("__metadata__", None)
    data_len = size - 8 - length
    for name, meta in header.items():
        _check_tensor_entry(path.name, name, meta, data_len)
    return header


# Bits per element of the safetensors dtypes; an entry's byte range must hold its shape.
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
               "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
               "I64": 64, "U64": 64, "F64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_tensor_entry(file: str, name: str, meta: object, data_len: int) -> None:
    """One header entry: a known dtype, a shape of non-negative integers, and integer
    ``data_offsets`` inside the file whose byte count fits the shape; raises InvalidInput."""
    bad = f"{file} is corrupt: tensor {name!r} has"
    if not isinstance(meta, dict):
        raise InvalidInput(f"{bad} no dtype, shape and data_offsets")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
        raise InvalidInput(f"{bad} unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_count(d) for d in shape):
        raise InvalidInput(f"{bad} shape {str(shape)[:80]}; dimensions must be integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise InvalidInput(f"{bad} data_offsets {str(offsets)[:80]}; they must be two integers "
                           ">= 0")
    start, end = offsets
    if not start <= end <= data_len:
        raise InvalidInput(f"{file} is corrupt or truncated: tensor {name!r} lies outside the file")
    if end - start != (math.prod(shape) * _DTYPE_BITS[dtype] + 7) // 8:
        raise InvalidInput(f"{bad} {end - start} bytes for shape {str(shape)[:80]} of {dtype}; "
                           "the header does not describe its data")


@lru_cache(maxsize=8)
def _base_shapes_cached(model_dir: str, stamp: tuple) -> dict[str, tuple[int, ...]]:
    base = Path(model_dir)
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(base.glob("*.safetensors")):
        for name, meta in read_safetensors_header(file).items():
            shapes[name] = tuple(meta["shape"])
    if not shapes:
        raise InvalidInput(f"base model at {base} has no .safetensors weights")
    return shapes


def base_weight_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Weight name -> shape of the base model (from headers; cached per file set)."""
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(Path(model_dir).glob("*.safetensors")))
    return _base_shapes_cached(str(model_dir), stamp)


def _module_of(tensor_name: str) -> tuple[str, str] | None:
    """('model.layers.0.self_attn.q_proj', 'A'|'B') for a PEFT LoRA tensor name, else None."""
    name = tensor_name
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    for kind in ("A", "B"):
        for suffix in (f".lora_{kind}.weight", f".lora_{kind}.default.weight"):
            if name.endswith(suffix):
                return name[: -len(suffix)], kind
    return None


def validate_adapter_dir(
    adapter_dir: Path, base_model_dir: Path, *, max_rank: int, max_bytes: int
) -> AdapterInfo:
    """Validate ``adapter_dir``; returns its facts or raises InvalidInput/TooLarge naming the problem."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / CONFIG_FILE
    weights_path = adapter_dir / WEIGHTS_FILE
    missing = [n for n, p in ((CONFIG_FILE, config_path), (WEIGHTS_FILE, weights_path)) if not p.is_file()]
    if missing:
        raise InvalidInput(
            f"adapter is missing {', '.join(missing)}; upload a PEFT directory saved with "
            "save_pretrained(safe_serialization=True)"
        )
    size = sum(p.stat().st_size for p in adapter_dir.rglob("*") if p.is_file())
    if size > max_bytes:
        raise TooLarge(
            f"adapter is {size} bytes; the limit is {max_bytes} (TUNELOOP_MAX_ADAPTER_BYTES)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InvalidInput(f"{CONFIG_FILE} must be a JSON object")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidInput(
            f"{CONFIG_FILE} has peft_type {config.get('peft_type')!r}; only LORA adapters are served"
        )
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise InvalidInput(f"{CONFIG_FILE} has an invalid rank r={rank!r}")
    clean_config = clean_adapter_config(config)

    header = read_safetensors_header(weights_path)
    base = base_weight_shapes(base_model_dir)
    modules: dict[str, dict[str, list[int]]] = {}
    for name, meta in header.items():
        parsed = _module_of(name)
        if parsed is None:
            continue  # e.g. modules_to_save; vLLM rejects what it cannot serve, we do not guess
        module, kind = parsed
        modules.setdefault(module, {})[kind] = meta["shape"]
    if not modules:
        raise InvalidInput(f"{WEIGHTS_FILE} contains no LoRA tensors (lora_A/lora_B)")

    max_seen = 0
    for module, parts in sorted(modules.items()):
        if set(parts) != {"A", "B"}:
            raise InvalidInput(f"module {module} has lora_{'A' if 'A' in parts else 'B'} only")
        base_shape = base.get(f"{module}.weight")
        if base_shape is None:
            raise InvalidInput(
                f"adapter targets module {module}, which does not exist in the base model; "
                "was it trained on a different base model?"
            )
        a, b = parts["A"], parts["B"]
        if len(a) != 2 or len(b) != 2 or len(base_shape) != 2:
            raise InvalidInput(f"module {module}: LoRA tensors must be 2-D matrices")
        r = a[0]
        if b[1] != r or a[1] != base_shape[1] or b[0] != base_shape[0]:
            raise InvalidInput(
                f"module {module}: LoRA shapes A{a} B{b} do not fit the base weight "
                f"{list(base_shape)}; the adapter was trained for a different base model"
            )
        max_seen = max(max_seen, r)
    if max_seen > max_rank:
        raise InvalidInput(
            f"adapter rank {max_seen} exceeds the engine's max LoRA rank {max_rank}; retrain with "
            f"r <= {max_rank} or raise TUNELOOP_MAX_LORA_RANK (restarts the engine)"
        )
    targets = config.get("target_modules")
    if isinstance(targets, list):
        base_leaf_names = {n.rsplit(".", 2)[-2] for n in base if n.endswith(".weight") and "." in n}
        unknown = [t for t in targets if t not in base_leaf_names and not any(
            n.startswith(t) or f".{t}." in n for n in base)]
        if unknown:
            raise InvalidInput(
                f"target_modules {unknown} do not exist in the base model "
                f"(its linear layers include {sorted(base_leaf_names)[:12]})"
            )
    return AdapterInfo(
        rank=max_seen,
        target_modules=sorted({m.rsplit(".", 1)[-1] for m in modules}),
        size_bytes=size,
        base_model_name_or_path=clean_config.get("base_model_name_or_path"),
        config=clean_config,
    )
