#!/usr/bin/env bash
# The load benchmark: one command, every number against a baseline measured in the same run.
#
#   benches/load.sh [SECONDS]        (default 15 s per load phase, 64 connections, ~1 KB JSON)
#
# On this machine, one after another: a bare axum handler (the ingress baseline), Debian's
# adnanh/webhook 2.8 in sync mode (the run-rate baseline), wharf with a one-vessel Wasm fleet,
# wharf with a one-vessel Rhai fleet, an ingress-only wharf filled with 100,000 queued runs (for
# memory), then the micro benchmarks (sandbox vs raw floors, claim cost vs queue length). The
# server is pinned to CPU 0 and wrk to CPU 1 when there are two CPUs or more.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs=${1:-15}
conns=64
token=bench-admin-token-0123456789
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

missing=()
for tool in wrk webhook jq sqlite3; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if (($(nproc) >= 2)); then
    srv=(taskset -c 0)
    gen=(taskset -c 1)
else
    srv=()
    gen=()
fi

log "building (release)"
cargo build --quiet --release --locked --bin wharf --example bare-axum
bash scripts/build-guests.sh "$work/guests" >/dev/null
wharf="$root/target/release/wharf"

# A ~1 KB GitHub push payload (the Wasm vessel is the github-push example guest).
jq -c '.commits = [.commits[0]] | del(.head_commit)' examples/github-push/payload.json >"$work/body.json"
body_bytes=$(wc -c <"$work/body.json")

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json", "rb")
wrk.body = f:read("*a")
f:close()
local limit = tonumber(os.getenv("WRK_STOP_AFTER") or "0")
local count = 0
function response(status, headers, body)
    count = count + 1
    if limit > 0 and count >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
    local s = summary.duration / 1e6
    io.write(string.format("RESULT %d %.1f %.2f %.2f %d\n", summary.requests, summary.requests / s,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA

# drive URL [extra wrk args]: prints "requests rate p50_ms p99_ms errors"
drive() {
    local url=$1
    shift
    "${gen[@]}" wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$work/post.lua" "$@" "$url" | sed -n 's/^RESULT //p'
}

wait_http() {
    for _ in $(seq 1 200); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing answers at $1" >&2
    return 1
}

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

api() { # METHOD PATH [BODY]
    curl -fsS -X "$1" -H "authorization: Bearer $token" -H 'content-type: application/json' \
        "http://127.0.0.1:$port/api/v1$2" ${3:+--data-binary "$3"}
}

# start_wharf NAME PORT [flags]: starts wharf and sets $wpid
start_wharf() {
    local name=$1
    port=$2
    shift 2
    WHARF_ADMIN_TOKEN=$token WHARF_LOG=warn "${srv[@]}" "$wharf" serve --listen "127.0.0.1:$port" \
        --data-dir "$work/$name" --no-demo "$@" >"$work/$name.log" 2>&1 &
    wpid=$!
    pids+=("$wpid")
    wait_http "http://127.0.0.1:$port/healthz"
}

# fleet FLEET_JSON_FILE: creates the fleet and its webhook, sets $fleet and $hook
fleet() {
    local org project
    org=$(api POST /orgs '{"name":"bench"}' | jq -r .id)
    project=$(api POST "/orgs/$org/projects" '{"name":"bench"}' | jq -r .id)
    fleet=$(api POST "/projects/$project/fleets" "@$1" | jq -r .id)
    hook=$(api POST "/fleets/$fleet/webhook" '{}' | jq -r .url)
}

# drain: waits until the fleet has nothing queued or running; prints the time (s since epoch)
drain() {
    while [[ $(api GET "/fleets/$fleet/runs?status=queued&limit=1" | jq '.runs | length') != 0 ||
        $(api GET "/fleets/$fleet/runs?status=running&limit=1" | jq '.runs | length') != 0 ]]; do
        sleep 0.2
    done
    date +%s.%N
}

declare -A R

log "bare axum, $secs s"
"${srv[@]}" "$root/target/release/examples/bare-axum" 127.0.0.1:18090 &
pids+=($!)
wait_http http://127.0.0.1:18090/ 2>/dev/null || true
sleep 0.5
read -r _ R[axum_rps] R[axum_p50] R[axum_p99] _ < <(drive http://127.0.0.1:18090/webhooks/x)

log "adnanh/webhook sync, $secs s"
cat >"$work/handler.sh" <<'SH'
#!/bin/sh
echo "$1 $2 $3"
SH
chmod +x "$work/handler.sh"
cat >"$work/hooks.json" <<JSON
[{"id": "push", "execute-command": "$work/handler.sh", "command-working-directory": "$work",
  "include-command-output-in-response": true,
  "pass-arguments-to-command": [{"source": "payload", "name": "repository.full_name"},
    {"source": "payload", "name": "pusher.name"}, {"source": "payload", "name": "ref"}]}]
JSON
"${srv[@]}" webhook -hooks "$work/hooks.json" -ip 127.0.0.1 -port 19000 >"$work/webhook.log" 2>&1 &
pids+=($!)
sleep 1
read -r _ R[hook_rps] R[hook_p50] R[hook_p99] R[hook_err] < <(drive http://127.0.0.1:19000/hooks/push)

for kind in wasm rhai; do
    log "wharf, one $kind vessel, $secs s"
    start_wharf "wharf-$kind" 18080
    R[${kind}_idle]=$(rss_mb "$wpid")
    if [[ $kind == wasm ]]; then
        base64 -w0 "$work/guests/github-push.wasm" >"$work/vessel.b64"
        jq -n --rawfile w "$work/vessel.b64" \
            '{name: "bench-wasm", variables: {branch: "main"}, vessels: [{name: "v", kind: "wasm", wasm_base64: $w}]}' >"$work/doc.json"
    else
        jq -n '{name: "bench-rhai", vessels: [{name: "v", kind: "rhai", source:
            "set_var(\"repository\", payload.repository.full_name); set_var(\"pusher\", payload.pusher.name); set_var(\"branch\", payload[\"ref\"]); set_var(\"commit_count\", payload.commits.len());"}]}' >"$work/doc.json"
    fi
    fleet "$work/doc.json"
    start=$(date +%s.%N)
    read -r n R[${kind}_rps] R[${kind}_p50] R[${kind}_p99] R[${kind}_err] < <(drive "$hook")
    R[${kind}_rss]=$(rss_mb "$wpid")
    end=$(drain)
    R[${kind}_runs]=$(echo "$n $start $end" | awk '{printf "%.0f", $1 / ($3 - $2)}')
    R[${kind}_failed]=$(api GET "/fleets/$fleet/runs?status=failed&limit=1000" | jq '.runs | length')
    kill "$wpid"
    wait "$wpid" 2>/dev/null || true
done

log "wharf ingress-only (--workers 0), until 100,000 runs are queued"
start_wharf wharf-mem 18081 --workers 0
R[mem_idle]=$(rss_mb "$wpid")
jq -n '{name: "mem", vessels: [{name: "v", kind: "rhai", source: "1"}]}' >"$work/doc.json"
fleet "$work/doc.json"
queued=0
while ((queued < 100000)); do
    read -r _ R[mem_rps] R[mem_p50] R[mem_p99] _ < <(WRK_STOP_AFTER=$(((100000 - queued + 1) / 2 + 64)) drive "$hook")
    queued=$(sqlite3 "$work/wharf-mem/wharf.db" "SELECT COUNT(*) FROM runs WHERE status = 'queued'")
done
R[mem_queued]=$queued
R[mem_rss]=$(rss_mb "$wpid")
kill "$wpid"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
met() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = (op == ">=") ? v >= t : v < t; print ok ? "met" : "NOT met"}'; }

ingress_ratio=$(ratio "${R[wasm_rps]}" "${R[axum_rps]}")
runs_ratio=$(ratio "${R[wasm_runs]}" "${R[hook_rps]}")
cat <<TABLE

Load: wrk, $conns connections, ${secs} s, ${body_bytes}-byte JSON body; server on CPU 0, wrk on CPU 1
| server | accepted/s | p50 ms | p99 ms | completed runs/s | RSS MB |
|---|---|---|---|---|---|
| bare axum (201, no store) | ${R[axum_rps]} | ${R[axum_p50]} | ${R[axum_p99]} | – | – |
| adnanh/webhook 2.8, sync shell hook | ${R[hook_rps]} | ${R[hook_p50]} | ${R[hook_p99]} | ${R[hook_rps]} | – |
| wharf, one Wasm vessel | ${R[wasm_rps]} | ${R[wasm_p50]} | ${R[wasm_p99]} | ${R[wasm_runs]} | ${R[wasm_rss]} |
| wharf, one Rhai vessel | ${R[rhai_rps]} | ${R[rhai_p50]} | ${R[rhai_p99]} | ${R[rhai_runs]} | ${R[rhai_rss]} |
| wharf ingress-only (\`--workers 0\`), filling to 100,000 queued | ${R[mem_rps]} | ${R[mem_p50]} | ${R[mem_p99]} | – | ${R[mem_rss]} |

(wharf errors: Wasm ${R[wasm_err]} non-201, ${R[wasm_failed]} failed runs; Rhai ${R[rhai_err]} non-201, ${R[rhai_failed]} failed runs; webhook ${R[hook_err]} errors)

| target | measured | status |
|---|---|---|
| durable ingress ≥ 0.5× bare axum | ${ingress_ratio}× | $(met "$ingress_ratio" ">=" 0.5) |
| completed Wasm runs/s ≥ 10× adnanh/webhook sync | ${runs_ratio}× | $(met "$runs_ratio" ">=" 10) |
| RSS idle < 40 MB | ${R[mem_idle]} MB | $(met "${R[mem_idle]}" "<" 40) |
| RSS with ${R[mem_queued]} queued runs < 150 MB | ${R[mem_rss]} MB | $(met "${R[mem_rss]}" "<" 150) |
TABLE

log "micro benchmarks"
cargo bench --quiet --locked --bench sandbox
cargo bench --quiet --locked --bench store
