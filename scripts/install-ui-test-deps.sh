#!/usr/bin/env bash
# Installs what the dashboard's browser test and type check need on a Debian machine, and
# nothing already there: Debian's chromium (the test drives /usr/bin/chromium; no browser is
# downloaded from elsewhere) and the locked playwright-core, typescript and openapi-typescript
# from ui/package-lock.json. The dashboard itself uses no npm package: these are for testing only. Idempotent; needs root or sudo for apt-get.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf 'install-ui-test-deps: %s\n' "$*"; }
# shellcheck source=scripts/install-lib.sh
source "$root/scripts/install-lib.sh"

apt_install_missing chromium fonts-dejavu-core
npm_ci_locked ui
log "done"
