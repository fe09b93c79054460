#!/usr/bin/env bash
# Builds every guest of the kit into OUT_DIR as <name>.wasm, copies each example's module next
# to its fleet.json (as the `wasm_file` it names), and checks every module is a vessel the host
# accepts (exports _start and memory; imports only wasi_snapshot_preview1 and wharf).
#
#   scripts/build-guests.sh OUT_DIR
#
# Run scripts/install-guest-toolchains.sh once first. Rust guests share one target directory
# (guest-sdk/target, or $CARGO_TARGET_DIR) so the SDK builds once; C and AssemblyScript guests
# are rebuilt only when a source is newer than the output.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 64
fi
mkdir -p "$1"
out="$(cd "$1" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/guest-sdk/target}"

log() { printf 'build-guests: %s\n' "$*"; }

# True when $1 is missing or older than any of the other paths (files, or folders searched).
stale() {
    local target=$1
    shift
    [[ ! -f $target ]] && return 0
    [[ -n $(find "$@" -newer "$target" -type f -not -path '*/node_modules/*' -not -name '*.wasm' -print -quit) ]]
}

build_rust() { # name crate-dir bin-name
    local name=$1 dir=$root/$2 bin=$3
    log "$name (rust, $2)"
    cargo build --quiet --locked --release --target wasm32-wasip1 --manifest-path "$dir/Cargo.toml"
    cp "$CARGO_TARGET_DIR/wasm32-wasip1/release/$bin.wasm" "$out/$name.wasm"
}

build_c() { # name source-dir
    local name=$1 dir=$root/$2
    if stale "$out/$name.wasm" "$dir" "$root/guest-sdk/templates/c/wharf.h"; then
        log "$name (c, $2)"
        clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -I "$root/guest-sdk/templates/c" \
            -o "$out/$name.wasm" "$dir/main.c"
    else
        log "$name: up to date"
    fi
}

build_assemblyscript() { # name package-dir
    local name=$1 dir=$root/$2
    if [[ ! -x $dir/node_modules/.bin/asc ]]; then
        log "$2 has no node_modules: run scripts/install-guest-toolchains.sh" >&2
        exit 1
    fi
    if stale "$out/$name.wasm" "$dir/assembly" "$dir/asconfig.json" "$dir/package-lock.json" \
        "$root/guest-sdk/templates/assemblyscript/assembly"; then
        log "$name (assemblyscript, $2)"
        (cd "$dir" && ./node_modules/.bin/asc assembly/index.ts --target release -o "$out/$name.wasm")
    else
        log "$name: up to date"
    fi
}

# Copies a built module beside an example's fleet.json under the name its wasm vessel gives.
place_in_example() { # name example-dir
    local name=$1 dir=$root/$2 file
    file=$(sed -n 's/.*"wasm_file": *"\([^"]*\)".*/\1/p' "$dir/fleet.json" | head -n 1)
    if [[ -z $file ]]; then
        log "$2/fleet.json names no wasm_file" >&2
        exit 1
    fi
    cmp -s "$out/$name.wasm" "$dir/$file" || cp "$out/$name.wasm" "$dir/$file"
}

build_rust template-rust guest-sdk/templates/rust my-vessel
build_rust github-push examples/github-push github-push
build_c template-c guest-sdk/templates/c
build_c slack-command examples/slack-command
build_assemblyscript template-assemblyscript guest-sdk/templates/assemblyscript
build_assemblyscript csv-upload examples/csv-upload

place_in_example github-push examples/github-push
place_in_example slack-command examples/slack-command
place_in_example csv-upload examples/csv-upload

names=(template-rust template-c template-assemblyscript github-push slack-command csv-upload)
modules=()
for name in "${names[@]}"; do modules+=("$out/$name.wasm"); done
node "$root/scripts/run-vessel.mjs" --check-module "${modules[@]}"
if command -v wasm-objdump >/dev/null; then
    # A second opinion from wabt: the import modules of every built guest.
    for module in "${modules[@]}"; do
        wasm-objdump -j Import -x "$module" | sed -n 's/.* <- \([^.]*\)\..*/\1/p' | sort -u |
            grep -vxE 'wasi_snapshot_preview1|wharf' && { log "$module has other imports" >&2; exit 1; }
    done
    log "wasm-objdump: imports only from wasi_snapshot_preview1 and wharf"
fi
log "built ${#names[@]} guests into $out"
