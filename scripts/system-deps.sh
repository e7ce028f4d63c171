#!/usr/bin/env bash
# Install the Debian packages and tools the integration tests need, when missing (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The console's browser tests drive this binary through Playwright (never `playwright install`).
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "system-deps: missing ${missing[*]}; install them: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "system-deps: installing ${missing[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    # Tests start their own PostgreSQL and Prometheus; the packages' services are not needed.
    service postgresql stop >/dev/null 2>&1 || true
    service prometheus stop >/dev/null 2>&1 || true
fi
if [[ -x scripts/install-helm.sh ]]; then
    bash scripts/install-helm.sh
fi
