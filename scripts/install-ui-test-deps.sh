#!/usr/bin/env bash
# Installs what the dashboard's browser test needs on a Debian machine, and nothing already
# there: Debian's chromium (the test drives /usr/bin/chromium; no browser is downloaded from
# elsewhere) and the locked playwright-core from ui/package-lock.json. The dashboard itself uses
# no npm package: these are for testing only. Idempotent; needs root or sudo for apt-get.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf 'install-ui-test-deps: %s\n' "$*"; }

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

packages=(chromium fonts-dejavu-core)
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

installed="$root/ui/node_modules/.package-lock.json"
if [[ -f $installed && ! $root/ui/package-lock.json -nt $installed ]]; then
    log "ui: node_modules up to date"
else
    log "ui: npm ci"
    (cd "$root/ui" && npm ci --no-audit --no-fund --loglevel=error)
fi
log "done"
