#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the guest toolchains (idempotent), runs
# wharf's tests (which build every guest and run the examples through `wharf run` and a real
# server), then the guest kit's own tests (SDK on the host, fmt and clippy of the guest crates).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-guest-toolchains.sh
# The dashboard's browser test: Debian's chromium and the locked playwright-core.
bash scripts/install-ui-test-deps.sh
# The OpenAPI test validates the served document with openapi-spec-validator (PyPI).
# The auth tests sign payloads with the providers' own libraries: stripe and standardwebhooks.
python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator stripe standardwebhooks
# The contract test runs Schemathesis against the served document of a real server.
python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5
# The PostgreSQL store is tested whenever a database is named; with a local PostgreSQL (trust
# auth on 127.0.0.1) and none named, a scratch database is made for this run and dropped after.
if [[ -z "${WHARF_TEST_DATABASE_URL:-}" ]] && command -v psql >/dev/null &&
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    db="wharf_test_$$"
    if psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null 2>&1; then
        trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
        export WHARF_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
    fi
fi
if [[ -n "${WHARF_TEST_DATABASE_URL:-}" ]]; then
    echo "test.sh: PostgreSQL tests against ${WHARF_TEST_DATABASE_URL%%\?*}"
else
    echo "test.sh: no PostgreSQL reachable; its conformance and multi-node tests are skipped (they fail under CI)"
fi
cargo test --locked --workspace --no-fail-fast
bash scripts/test-guests.sh
