"""Each kind of bad adapter is rejected with a message naming the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.adapter_validation import validate_adapter_dir
from services.archive import find_adapter_root, safe_extract
from services.errors import InvalidInput, TooLarge
from tests.support.archives import tar_gz


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_valid_adapter_reports_rank_and_targets(lora_factory, base_model_dir):
    info = validate_adapter_dir(lora_factory(8), base_model_dir, max_rank=8, max_bytes=10**9)
    assert info.rank == 8
    assert {"q_proj", "v_proj", "down_proj"} <= set(info.target_modules)


def test_wrong_base_model_is_rejected(foreign_lora, base_model_dir):
    with pytest.raises(InvalidInput, match="different base model"):
        validate_adapter_dir(foreign_lora, base_model_dir, max_rank=8, max_bytes=10**9)


def test_rank_above_engine_limit_is_rejected(lora_factory, base_model_dir):
    with pytest.raises(InvalidInput, match="rank 16 exceeds the engine's max LoRA rank 8"):
        validate_adapter_dir(lora_factory(16), base_model_dir, max_rank=8, max_bytes=10**9)


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_file_is_named(lora_factory, base_model_dir, tmp_path, missing):
    d = _copy(lora_factory(8), tmp_path / "a")
    (d / missing).unlink()
    with pytest.raises(InvalidInput, match=f"missing {missing}"):
        validate_adapter_dir(d, base_model_dir, max_rank=8, max_bytes=10**9)


def test_corrupt_safetensors_is_rejected(lora_factory, base_model_dir, tmp_path):
    d = _copy(lora_factory(8), tmp_path / "a")
    (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(InvalidInput, match="corrupt"):
        validate_adapter_dir(d, base_model_dir, max_rank=8, max_bytes=10**9)


def test_truncated_safetensors_is_rejected(lora_factory, base_model_dir, tmp_path):
    d = _copy(lora_factory(8), tmp_path / "a")
    weights = d / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(InvalidInput, match="truncated"):
        validate_adapter_dir(d, base_model_dir, max_rank=8, max_bytes=10**9)


def _rewrite_first_tensor(weights: Path, **changes: object) -> None:
    """Rewrite ``weights``' safetensors header with ``changes`` to its first LoRA tensor."""
    import struct

    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    first = next(k for k in sorted(header) if "lora_A" in k)
    header[first].update(changes)
    encoded = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + length:])


@pytest.mark.parametrize(("changes", "message"), [
    ({"data_offsets": ["0", "x"]}, "data_offsets .* must be two integers"),
    ({"data_offsets": [0, 10**20]}, "lies outside the file"),
    ({"data_offsets": [0.0, 16]}, "must be two integers"),
    ({"data_offsets": [0]}, "must be two integers"),
    ({"shape": [-8, 576]}, r"dimensions must be integers >= 0"),
    ({"shape": [8.5, 576]}, r"dimensions must be integers >= 0"),
    ({"shape": [4, 576]}, "does not describe its data"),
    ({"dtype": "X99"}, "unknown dtype"),
], ids=["non-numeric-offsets", "offsets-past-the-end", "float-offsets", "one-offset",
        "negative-dimension", "float-dimension", "shape-bigger-than-data", "unknown-dtype"])
def test_hostile_safetensors_headers_are_invalid_input(lora_factory, base_model_dir, tmp_path,
                                                       changes, message):
    d = _copy(lora_factory(8), tmp_path / "a")
    _rewrite_first_tensor(d / "adapter_model.safetensors", **changes)
    with pytest.raises(InvalidInput, match=message):
        validate_adapter_dir(d, base_model_dir, max_rank=8, max_bytes=10**9)


@pytest.mark.parametrize(("head", "message"), [
    ((1 << 40).to_bytes(8, "little") + b"{}", "header length .* is impossible"),
    ((100_002).to_bytes(8, "little") + b"[" * 100_002, "header is not JSON"),
    ((2).to_bytes(8, "little") + b"[]", "header is not an object"),
], ids=["length-beyond-the-file", "deeply-nested", "not-an-object"])
def test_hostile_safetensors_framing_is_invalid_input(lora_factory, base_model_dir, tmp_path,
                                                      head, message):
    d = _copy(lora_factory(8), tmp_path / "a")
    (d / "adapter_model.safetensors").write_bytes(head)
    with pytest.raises(InvalidInput, match=message):
        validate_adapter_dir(d, base_model_dir, max_rank=8, max_bytes=10**9)


def test_unknown_target_module_is_rejected(lora_factory, base_model_dir, tmp_path):
    d = _copy(lora_factory(8), tmp_path / "a")
    config = json.loads((d / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "c_attn"]
    (d / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match="c_attn"):
        validate_adapter_dir(d, base_model_dir, max_rank=8, max_bytes=10**9)


def test_oversize_adapter_is_rejected(lora_factory, base_model_dir):
    with pytest.raises(TooLarge, match="limit is 1000"):
        validate_adapter_dir(lora_factory(8), base_model_dir, max_rank=8, max_bytes=1000)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([("../evil.txt", b"x", "file")], r"escapes the archive root"),
        ([("a/../../evil.txt", b"x", "file")], r"escapes the archive root"),
        ([("/etc/evil.txt", b"x", "file")], r"absolute path"),
        ([("link", b"/etc/passwd", "symlink")], r"is a link"),
        ([("hard", b"adapter_config.json", "hardlink")], r"is a link"),
        ([("fifo", None, "fifo")], r"device, FIFO"),
        ([("dev", None, "chardev")], r"device, FIFO"),
    ],
)
def test_unsafe_archives_are_rejected_before_writing(tmp_path, entries, message):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([("ok.txt", b"fine", "file"), *entries]))
    dest = tmp_path / "out"
    with pytest.raises(InvalidInput, match=message):
        safe_extract(archive, dest, max_bytes=10**6)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "ok.txt").exists(), "nothing is written when any member is unsafe"


def test_archive_unpacking_limits_total_size(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([("big.bin", b"\0" * 5000, "file")]))
    with pytest.raises(TooLarge):
        safe_extract(archive, tmp_path / "out", max_bytes=4000)


def test_corrupt_archive_is_rejected(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(InvalidInput, match="archive"):
        safe_extract(archive, tmp_path / "out", max_bytes=10**6)


def test_adapter_root_found_in_single_subfolder(tmp_path):
    (tmp_path / "x" / "inner").mkdir(parents=True)
    (tmp_path / "x" / "inner" / "adapter_config.json").write_text("{}")
    assert find_adapter_root(tmp_path / "x") == tmp_path / "x" / "inner"
