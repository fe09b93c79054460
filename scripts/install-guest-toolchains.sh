#!/usr/bin/env bash
# Installs what building wharf's guest kit needs on a Debian machine, and nothing already there:
#   - the Rust target wasm32-wasip1 (Rust itself must already be installed with rustup);
#   - clang, lld, wasi-libc, libclang-rt-14-dev-wasm32 (C guests) and wabt (wasm-objdump);
#   - Node.js and npm when missing, then the AssemblyScript packages from each package-lock.json.
# Idempotent: a second run only checks. Needs root or sudo for apt-get.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assemblyscript_dirs=(guest-sdk/templates/assemblyscript examples/csv-upload)

log() { printf 'install-guest-toolchains: %s\n' "$*"; }

# shellcheck source=scripts/install-lib.sh
source "$root/scripts/install-lib.sh"

# Rust: the wasm32-wasip1 standard library.
if ! command -v rustup >/dev/null; then
    log "rustup not found: install Rust with rustup first" >&2
    exit 1
fi
if rustup target list --installed | grep -qx wasm32-wasip1; then
    log "rust target wasm32-wasip1: present"
else
    rustup target add wasm32-wasip1
fi

# Debian packages: C toolchain for wasm32-wasi, wabt (and Node.js if there is none).
apt_install_missing clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt

# AssemblyScript: exactly the locked versions, reinstalled only when the lockfile changed.
for dir in "${assemblyscript_dirs[@]}"; do
    npm_ci_locked "$dir" asc
done

log "done"
