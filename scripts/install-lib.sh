# Shared by the install scripts (sourced, not run): root for apt-get, Debian packages installed
# only when missing, npm packages installed exactly as locked. The sourcing script defines
# `log` and sets `root` (the repository) first.

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

# Installs the Debian packages given that are not installed yet, plus Node.js and npm when
# either command is missing.
apt_install_missing() {
    local packages=("$@") missing=() package
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        packages+=(nodejs npm)
    fi
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
}

# `npm ci` in a directory of the repository when its node_modules does not match its
# package-lock.json (or lacks the optional executable given as the second argument).
npm_ci_locked() {
    local dir=$1 bin=${2:-}
    local installed="$root/$dir/node_modules/.package-lock.json"
    if [[ -f $installed && ! $root/$dir/package-lock.json -nt $installed ]] &&
        [[ -z $bin || -x $root/$dir/node_modules/.bin/$bin ]]; then
        log "$dir: node_modules up to date"
    else
        log "$dir: npm ci"
        (cd "$root/$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
