#!/usr/bin/env bash
# The load benchmark: one command, every number against a baseline measured in the same run.
#
#   benches/load.sh [SECONDS]        (default 15 s per load phase, 64 connections, ~1 KB JSON)
#
# On this machine, one after another: a bare axum handler (the ingress baseline), Debian's
# adnanh/webhook 2.8 in sync mode (the run-rate baseline), wharf with a one-vessel Wasm fleet,
# wharf with a one-vessel Rhai fleet, an ingress-only wharf (its rate, then topped up to 100,000
# queued runs for memory), the Rhai fleet on one and on two nodes of a scratch PostgreSQL database
# when a local PostgreSQL answers, then the micro benchmarks (sandbox vs raw floors, claim cost
# vs queue length). Each
# wharf fleet is first driven as hard as wrk can (its maximum), then at a fixed half of its
# maximum completed-runs rate by `loadgen` (benches/loadgen.rs, open loop) for the end-to-end
# latency of its runs, from the call's arrival to the run's end, read from the SQLite file.
# wharf runs at its default log level, as users run it; its stderr is kept and measured. The
# server is pinned to CPU 0 and the load generators to CPU 1 when there are two CPUs or more.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs=${1:-15}
conns=64
token=bench-admin-token-0123456789-abcdefghij
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
    as_root=()
    ((EUID == 0)) || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
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
cargo build --quiet --release --locked --example loadgen
# The guest toolchains (wasm32-wasip1 target, clang, AssemblyScript): idempotent.
bash scripts/install-guest-toolchains.sh >/dev/null
bash scripts/build-guests.sh "$work/guests" >/dev/null
# Honours CARGO_TARGET_DIR and workspace settings instead of assuming ./target.
target="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release"
wharf="$target/wharf"

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

# drive URL [extra wrk args]: the maximum, closed loop; prints "requests rate p50_ms p99_ms errors"
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

# steady URL RATE IDS_FILE: open loop at RATE/s for the phase duration, the run id of every 201
# into IDS_FILE; prints "sent ok non2xx errors achieved_rate p50_ms p99_ms max_ms"
steady() {
    "${gen[@]}" "$target/examples/loadgen" --url "$1" --body "$work/body.json" --rate "$2" \
        --duration "$secs" --connections "$conns" --out "$3" | sed -n 's/^RESULT //p'
}

# pct P: the P-th percentile (nearest rank) of the numbers on stdin
pct() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { r = p * NR / 100; if (r > int(r)) r = int(r) + 1; if (r < 1) r = 1; print NR ? v[r] : "-" }'; }

# log_stats FILE: prints "bytes longest_line_bytes"
log_stats() { LC_ALL=C awk '{ n += length + 1; if (length > m) m = length } END { print n + 0, m + 0 }' "$1"; }

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
    # No WHARF_LOG: the default filter, what users run. The log is stderr; stdout is the banner.
    env -u WHARF_LOG WHARF_ADMIN_TOKEN=$token "${srv[@]}" "$wharf" serve --listen "127.0.0.1:$port" \
        --data-dir "$work/$name" --no-demo "$@" >"$work/$name.out" 2>"$work/$name.log" &
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
"${srv[@]}" "$target/examples/bare-axum" 127.0.0.1:18090 &
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
    R[${kind}_failed]=$(api GET "/fleets/$fleet/runs?status=failed&limit=500" | jq '.runs | length')

    R[${kind}_rate]=$(awk -v r="${R[${kind}_runs]}" 'BEGIN {printf "%.0f", r / 2}')
    log "wharf, one $kind vessel, fixed ${R[${kind}_rate]}/s for $secs s (end-to-end latency)"
    since=$(date +%s%3N)
    read -r _ R[${kind}_e2e_ok] R[${kind}_e2e_non2xx] R[${kind}_e2e_err] _ R[${kind}_ack_p50] R[${kind}_ack_p99] _ \
        < <(steady "$hook" "${R[${kind}_rate]}" "$work/$kind.ids")
    drain >/dev/null
    # Every run of this phase: this data folder holds one fleet, and nothing else was queued since.
    # created_at is when the call was received, finished_at when the run ended (both ms).
    sqlite3 "$work/wharf-$kind/wharf.db" \
        "SELECT finished_at - created_at FROM runs WHERE created_at >= $since AND finished_at IS NOT NULL" \
        >"$work/$kind.e2e"
    R[${kind}_e2e_runs]=$(wc -l <"$work/$kind.e2e")
    R[${kind}_e2e_ids]=$(wc -l <"$work/$kind.ids")
    R[${kind}_e2e_p50]=$(pct 50 <"$work/$kind.e2e")
    R[${kind}_e2e_p99]=$(pct 99 <"$work/$kind.e2e")
    R[${kind}_e2e_failed]=$(sqlite3 "$work/wharf-$kind/wharf.db" \
        "SELECT COUNT(*) FROM runs WHERE created_at >= $since AND status != 'succeeded'")
    kill "$wpid"
    wait "$wpid" 2>/dev/null || true
    read -r R[${kind}_log_bytes] R[${kind}_log_line] < <(log_stats "$work/wharf-$kind.log")
done

log "wharf ingress-only (--workers 0), $secs s, then topped up to at least 100,000 queued runs"
# The backlog cap (`--max-queued-per-fleet`, 10,000 by default) is turned off here, and only here:
# this phase measures the memory of 100,000 queued runs of one fleet, which the cap exists to
# refuse (with it on, the top-up below never ends). Every other phase runs at the defaults.
start_wharf wharf-mem 18081 --workers 0 --max-queued-per-fleet 0
R[mem_idle]=$(rss_mb "$wpid")
jq -n '{name: "mem", vessels: [{name: "v", kind: "rhai", source: "1"}]}' >"$work/doc.json"
fleet "$work/doc.json"
# The rate: a full phase like the others. The memory figure: whatever is queued by then, topped up
# to 100,000 if the phase queued fewer.
read -r _ R[mem_rps] R[mem_p50] R[mem_p99] _ < <(drive "$hook")
queued=$(sqlite3 "$work/wharf-mem/wharf.db" "SELECT COUNT(*) FROM runs WHERE status = 'queued'")
while ((queued < 100000)); do
    WRK_STOP_AFTER=$(((100000 - queued + 1) / 2 + 64)) drive "$hook" >/dev/null
    queued=$(sqlite3 "$work/wharf-mem/wharf.db" "SELECT COUNT(*) FROM runs WHERE status = 'queued'")
done
R[mem_queued]=$queued
R[mem_rss]=$(rss_mb "$wpid")
kill "$wpid"
wait "$wpid" 2>/dev/null || true
read -r R[mem_log_bytes] R[mem_log_line] < <(log_stats "$work/wharf-mem.log")

# PostgreSQL: the Rhai fleet again, on one node whose store is a scratch database of the local
# PostgreSQL (or BENCH_DATABASE_URL). The database server is not pinned: it takes what it needs of
# both CPUs, so this row is not a like-for-like comparison with the SQLite row above.
pg_url=${BENCH_DATABASE_URL:-}
pg_db=
if [[ -z $pg_url ]] && command -v psql >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    pg_db="wharf_bench_$$"
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $pg_db" && pg_url="postgres://postgres@127.0.0.1:5432/$pg_db"
fi
if [[ -n $pg_url ]]; then
    log "wharf on PostgreSQL, one Rhai vessel, $secs s"
    start_wharf wharf-pg 18082 --database "$pg_url"
    jq -n '{name: "bench-rhai", vessels: [{name: "v", kind: "rhai", source:
        "set_var(\"repository\", payload.repository.full_name); set_var(\"pusher\", payload.pusher.name); set_var(\"branch\", payload[\"ref\"]); set_var(\"commit_count\", payload.commits.len());"}]}' >"$work/doc.json"
    fleet "$work/doc.json"
    start=$(date +%s.%N)
    read -r n R[pg_rps] R[pg_p50] R[pg_p99] R[pg_err] < <(drive "$hook")
    R[pg_rss]=$(rss_mb "$wpid")
    end=$(drain)
    R[pg_runs]=$(echo "$n $start $end" | awk '{printf "%.0f", $1 / ($3 - $2)}')
    kill "$wpid"
    wait "$wpid" 2>/dev/null || true

    # Two nodes on one (fresh) database, the same fleet; wrk splits its connections between them.
    log "two wharf nodes on one PostgreSQL database, one Rhai vessel, $secs s"
    if [[ -n $pg_db ]]; then
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)"
        psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $pg_db"
    fi
    start_wharf wharf-pg-a 18083 --database "$pg_url"
    node_a=$wpid
    fleet "$work/doc.json"
    start_wharf wharf-pg-b 18084 --database "$pg_url"
    node_b=$wpid
    hook_path=${hook#http://127.0.0.1:18083}
    start=$(date +%s.%N)
    gens=()
    for p in 18083 18084; do
        "${gen[@]}" wrk -t1 -c$((conns / 2)) -d"${secs}s" -s "$work/post.lua" "http://127.0.0.1:$p$hook_path" |
            sed -n 's/^RESULT //p' >"$work/pg2-$p.txt" &
        gens+=($!)
    done
    wait "${gens[@]}"
    n=$(cat "$work"/pg2-*.txt | awk '{s += $1} END {print s + 0}')
    R[pg2_rps]=$(cat "$work"/pg2-*.txt | awk '{s += $2} END {printf "%.1f", s}')
    port=18083
    end=$(drain)
    R[pg2_runs]=$(echo "$n $start $end" | awk '{printf "%.0f", $1 / ($3 - $2)}')
    kill "$node_a" "$node_b"
    wait "$node_a" "$node_b" 2>/dev/null || true
    if [[ -n $pg_db ]]; then
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" || true
    fi
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# met VALUE OP TARGET: a missing measure ("-", empty) is never met
met() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {ok = v ~ /^[0-9.]+$/ && ((op == ">=") ? v + 0 >= t : v + 0 < t); print ok ? "met" : "NOT met"}'; }

mb() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

ingress_wasm=$(ratio "${R[wasm_rps]}" "${R[axum_rps]}")
ingress_rhai=$(ratio "${R[rhai_rps]}" "${R[axum_rps]}")
ingress_alone=$(ratio "${R[mem_rps]}" "${R[axum_rps]}")
runs_wasm=$(ratio "${R[wasm_runs]}" "${R[hook_rps]}")
runs_rhai=$(ratio "${R[rhai_runs]}" "${R[hook_rps]}")
cat <<TABLE

Load: wrk, $conns connections, ${secs} s, ${body_bytes}-byte JSON body; server on CPU 0, wrk and loadgen on CPU 1
| server | accepted/s | p50 ms | p99 ms | completed runs/s | RSS MB |
|---|---|---|---|---|---|
| bare axum (201, no store) | ${R[axum_rps]} | ${R[axum_p50]} | ${R[axum_p99]} | – | – |
| adnanh/webhook 2.8, sync shell hook | ${R[hook_rps]} | ${R[hook_p50]} | ${R[hook_p99]} | ${R[hook_rps]} | – |
| wharf, one Wasm vessel | ${R[wasm_rps]} | ${R[wasm_p50]} | ${R[wasm_p99]} | ${R[wasm_runs]} | ${R[wasm_rss]} |
| wharf, one Rhai vessel | ${R[rhai_rps]} | ${R[rhai_p50]} | ${R[rhai_p99]} | ${R[rhai_runs]} | ${R[rhai_rss]} |
| wharf ingress-only (\`--workers 0\`) | ${R[mem_rps]} | ${R[mem_p50]} | ${R[mem_p99]} | – | ${R[mem_rss]} |
$(if [[ -n ${R[pg_rps]:-} ]]; then echo "| wharf on PostgreSQL (one node), one Rhai vessel | ${R[pg_rps]} | ${R[pg_p50]} | ${R[pg_p99]} | ${R[pg_runs]} | ${R[pg_rss]} |"; fi)
$(if [[ -n ${R[pg2_rps]:-} ]]; then echo "| two wharf nodes on one PostgreSQL database, one Rhai vessel | ${R[pg2_rps]} | – | – | ${R[pg2_runs]} | – |"; fi)

(wharf errors: Wasm ${R[wasm_err]} non-201, ${R[wasm_failed]} failed runs; Rhai ${R[rhai_err]} non-201, ${R[rhai_failed]} failed runs; webhook ${R[hook_err]} errors)

End to end at a fixed rate: loadgen, open loop, $conns connections, ${secs} s; run latency = finished_at − created_at of every run of the phase
| fleet | rate/s | 201s | non-201 / errors | 201 p50 ms | 201 p99 ms | runs | not succeeded | run p50 ms | run p99 ms |
|---|---|---|---|---|---|---|---|---|---|
| one Wasm vessel | ${R[wasm_rate]} | ${R[wasm_e2e_ok]} | ${R[wasm_e2e_non2xx]} / ${R[wasm_e2e_err]} | ${R[wasm_ack_p50]} | ${R[wasm_ack_p99]} | ${R[wasm_e2e_runs]} | ${R[wasm_e2e_failed]} | ${R[wasm_e2e_p50]} | ${R[wasm_e2e_p99]} |
| one Rhai vessel | ${R[rhai_rate]} | ${R[rhai_e2e_ok]} | ${R[rhai_e2e_non2xx]} / ${R[rhai_e2e_err]} | ${R[rhai_ack_p50]} | ${R[rhai_ack_p99]} | ${R[rhai_e2e_runs]} | ${R[rhai_e2e_failed]} | ${R[rhai_e2e_p50]} | ${R[rhai_e2e_p99]} |

(run ids answered with 201: Wasm ${R[wasm_e2e_ids]}, Rhai ${R[rhai_e2e_ids]})

wharf logs at the default level (stderr): Wasm $(mb "${R[wasm_log_bytes]}") MB, longest line ${R[wasm_log_line]} bytes; Rhai $(mb "${R[rhai_log_bytes]}") MB, longest line ${R[rhai_log_line]} bytes; ingress-only $(mb "${R[mem_log_bytes]}") MB, longest line ${R[mem_log_line]} bytes

| target | measured | status |
|---|---|---|
| completed Wasm runs/s ≥ 10× adnanh/webhook sync | ${runs_wasm}× | $(met "$runs_wasm" ">=" 10) |
| completed Rhai runs/s ≥ 10× adnanh/webhook sync | ${runs_rhai}× | $(met "$runs_rhai" ">=" 10) |
| accepted webhooks/s while Wasm workers run ≥ 0.5× bare axum | ${ingress_wasm}× | $(met "$ingress_wasm" ">=" 0.5) |
| accepted webhooks/s while Rhai workers run ≥ 0.5× bare axum | ${ingress_rhai}× | $(met "$ingress_rhai" ">=" 0.5) |
| (reference, no target) accepted webhooks/s with no workers, vs bare axum | ${ingress_alone}× | – |
| end-to-end p99 (Wasm) < 20 ms | ${R[wasm_e2e_p99]} ms | $(met "${R[wasm_e2e_p99]}" "<" 20) |
| end-to-end p99 (Rhai) < 20 ms | ${R[rhai_e2e_p99]} ms | $(met "${R[rhai_e2e_p99]}" "<" 20) |
| RSS idle < 40 MB | ${R[mem_idle]} MB | $(met "${R[mem_idle]}" "<" 40) |
| RSS with ${R[mem_queued]} queued runs < 150 MB | ${R[mem_rss]} MB | $(met "${R[mem_rss]}" "<" 150) |
TABLE

log "micro benchmarks"
cargo bench --quiet --locked --bench sandbox
cargo bench --quiet --locked --bench store
