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

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

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

# Debian packages: C toolchain for wasm32-wasi, wabt, and Node.js if there is none.
packages=(clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "debian packages: present"
fi

# AssemblyScript: exactly the locked versions, reinstalled only when the lockfile changed.
for dir in "${assemblyscript_dirs[@]}"; do
    installed="$root/$dir/node_modules/.package-lock.json"
    if [[ -f $installed && ! $root/$dir/package-lock.json -nt $installed && -x $root/$dir/node_modules/.bin/asc ]]; then
        log "$dir: node_modules up to date"
    else
        log "$dir: npm ci"
        (cd "$root/$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
done

log "done"
