#!/usr/bin/env bash
# Two peergate builds side by side: each runs its own pair (alice -> bob) on loopback in front of
# one app, and the same closed-loop load alternates between them (A B A B ...). For before/after
# numbers of a change to the request path, on a machine too noisy for runs made apart.
#
#   benches/load/ab.sh OLD_BINARY NEW_BINARY [full|in] [rounds] [seconds]
#
# full: app -> alice outbound -> bob inbound -> app; in: a signing client -> bob inbound -> app.
# Prints one line per run: A or B, requests/s, p50, p99, CPU ms per 1000 requests (the pair).
# RATE=N runs at a constant N requests/s on 16 connections instead of the closed loop (latency).
# NAMES=1 names the app and the peers `localhost` in the configs instead of 127.0.0.1 (host-name
# resolution on the request path). WORKERS=N sets listen.threads (default 2, as run.sh).
set -euo pipefail
HOST=127.0.0.1
[ -n "${NAMES:-}" ] && HOST=localhost
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/../../target}
PGB=$TARGET/load/release/pgbench
[ -x "$PGB" ] || (cd "$HERE" && CARGO_TARGET_DIR=$TARGET/load cargo build --release --quiet)
BIN_A=$1 BIN_B=$2 MODE=${3:-full} ROUNDS=${4:-3} DUR=${5:-5}
DIR=$(mktemp -d /tmp/peergate-ab.XXXXXX)
mkdir "$DIR/logs"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
"$PGB" certs --dir "$DIR"
read -r A_SPKI _ <<<"$("$PGB" identity --out "$DIR/alice.pem")"
read -r B_SPKI _ <<<"$("$PGB" identity --out "$DIR/bob.pem")"
read -r APP <<<"$("$PGB" ports --count 1)"
"$PGB" app --listen "127.0.0.1:$APP" &
PIDS+=($!)
declare -A OUT IN PID_A PID_B
for v in A B; do
    bin=BIN_$v
    read -r ai ao aa bi bo ba <<<"$("$PGB" ports --count 6)"
    "$PGB" peers --count 1 --out "$DIR/a$v-peers.yaml" --peer "bob,$B_SPKI,https://$HOST:$bi" 2>/dev/null
    "$PGB" peers --count 1 --out "$DIR/b$v-peers.yaml" --peer "alice,$A_SPKI,https://$HOST:$ai" 2>/dev/null
    for side in a b; do
        if [ $side = a ]; then key=alice i=$ai o=$ao m=$aa; else key=bob i=$bi o=$bo m=$ba; fi
        cat >"$DIR/$side$v.yaml" <<EOC
identity: { key_file: $key.pem, name: $key, hosts: ["127.0.0.1", "localhost"] }
listen: { inbound: "127.0.0.1:$i", outbound: "127.0.0.1:$o", admin: "127.0.0.1:$m", threads: ${WORKERS:-2} }
tls: { cert_file: cert.pem, key_file: key.pem, peer_ca_file: ca.pem }
app: { upstream: "$HOST:$APP" }
peers_file: $side$v-peers.yaml
EOC
        (cd "$DIR" && exec "${!bin}" run -c "$DIR/$side$v.yaml" >"$DIR/logs/$side$v.log" 2>&1) &
        PIDS+=($!)
        if [ $side = a ]; then PID_A[$v]=$!; else PID_B[$v]=$!; fi
    done
    OUT[$v]=$ao IN[$v]=$bi
done
sleep 2
LOAD=(--connections 32)
[ -n "${RATE:-}" ] && LOAD=(--connections 16 --rate "$RATE")
for ((r = 0; r < ROUNDS; r++)); do
    for v in A B; do
        if [ "$MODE" = full ]; then
            line=$("$PGB" load --url "http://127.0.0.1:${OUT[$v]}/peers/bob/hello" "${LOAD[@]}" \
                --duration "$DUR" --warmup 1 --pids "${PID_A[$v]},${PID_B[$v]}")
        else
            line=$("$PGB" load --url "https://127.0.0.1:${IN[$v]}/hello" --ca "$DIR/ca.pem" \
                --sign "$DIR/alice.pem" --presign 100000 "${LOAD[@]}" --duration "$DUR" \
                --warmup 1 --pids "${PID_B[$v]}")
        fi
        echo "$v $(echo "$line" | tr ' ' '\n' | grep -E '^(rps|p50_us|p99_us|cpu_ms_per_1k)=' | tr '\n' ' ')"
    done
done
