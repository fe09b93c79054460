#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the guest toolchains (idempotent), runs
# wharf's tests (which build every guest and run the examples through `wharf run` and a real
# server), then the guest kit's own tests (SDK on the host, fmt and clippy of the guest crates).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-guest-toolchains.sh
cargo test --locked
bash scripts/test-guests.sh
