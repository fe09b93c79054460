#!/usr/bin/env bash
# Tests the guest kit: the SDK and Rust guests on the host (cargo test, clippy, fmt), then
# builds every guest and runs the Wasm example fleets on the reference host against their
# expected.json. Run scripts/install-guest-toolchains.sh once first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/guest-sdk/target}"

for crate in guest-sdk guest-sdk/templates/rust examples/github-push; do
    manifest="$root/$crate/Cargo.toml"
    echo "test-guests: $crate"
    cargo fmt --check --manifest-path "$manifest"
    cargo clippy --quiet --locked --all-targets --manifest-path "$manifest" -- -D warnings
    cargo test --quiet --locked --manifest-path "$manifest"
done
cargo clippy --quiet --locked --lib --target wasm32-wasip1 --manifest-path "$root/guest-sdk/Cargo.toml" -- -D warnings

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$root/scripts/build-guests.sh" "$out"

passed=0
failed=0
for example in github-push slack-command csv-upload; do
    if node "$root/scripts/run-vessel.mjs" --check-example "$root/examples/$example"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "examples: $passed passed, $failed failed"
((failed == 0))
