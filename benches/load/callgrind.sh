#!/usr/bin/env bash
# Instructions per request of each proxy on the full path, counted by valgrind's callgrind:
# app -> alice (sign) -TLS-> bob (verify) -> app, and app -> nginx A -TLS-> nginx B -> app, set up
# as run.sh sets them up. A count of instructions does not move with other tenants' load, so
# this compares the proxies' own work where the timed runs cannot (it says nothing about the
# kernel's share, waiting, or how fast the instructions run).
#
#   benches/load/callgrind.sh          # from the repository root, as root; about 3 minutes
#
# N requests (default 2000) at RATE per second (default 100) on 4 connections, after a warm-up;
# the counters are zeroed before them and dumped after. PG_BIN=path measures that peergate
# binary (build it with debug line tables, as this script does, or the groups cannot be told
# apart); KEEP=1 keeps the profiles (callgrind_annotate reads them). Needs valgrind and nginx
# (installed with apt-get when missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-2000} RATE=${RATE:-100}
say() { echo "callgrind.sh: $*" >&2; }

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

PGB=$TARGET/load/release/pgbench
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET/load cargo build --release --quiet)
if [ -z "${PG_BIN:-}" ]; then
    say "building peergate (release, with line tables for the profile; its own target directory)"
    (cd "$ROOT" && CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$TARGET/callgrind \
        cargo build --release --quiet --bin peergate)
    PG_BIN=$TARGET/callgrind/release/peergate
fi

DIR=$(mktemp -d /tmp/peergate-callgrind.XXXXXX)
mkdir "$DIR/logs"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then say "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
wait_port() { # port: up to 120 s (valgrind starts slowly)
    for _ in $(seq 1200); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    say "nothing listens on port $1; logs in $DIR/logs"
    exit 1
}

"$PGB" certs --dir "$DIR"
read -r A_SPKI _ <<<"$("$PGB" identity --out "$DIR/alice.pem")"
read -r B_SPKI _ <<<"$("$PGB" identity --out "$DIR/bob.pem")"
read -r APP AI AO AM BI BO BM NGA NGB <<<"$("$PGB" ports --count 9)"
"$PGB" app --listen "127.0.0.1:$APP" &
PIDS+=($!)
"$PGB" peers --count 1 --out "$DIR/a-peers.yaml" --peer "bob,$B_SPKI,https://127.0.0.1:$BI" 2>/dev/null
"$PGB" peers --count 1 --out "$DIR/b-peers.yaml" --peer "alice,$A_SPKI,https://127.0.0.1:$AI" 2>/dev/null
for side in a b; do
    if [ $side = a ]; then key=alice i=$AI o=$AO m=$AM; else key=bob i=$BI o=$BO m=$BM; fi
    cat >"$DIR/$side.yaml" <<EOC
identity: { key_file: $key.pem, name: $key, hosts: ["127.0.0.1", "localhost"] }
listen: { inbound: "127.0.0.1:$i", outbound: "127.0.0.1:$o", admin: "127.0.0.1:$m", threads: 2 }
tls: { cert_file: cert.pem, key_file: key.pem, peer_ca_file: ca.pem }
app: { upstream: "127.0.0.1:$APP" }
peers_file: $side-peers.yaml
EOC
done
# nginx as run.sh configures it, in one process (no master) so that callgrind follows it.
# shellcheck source=benches/load/nginx-pair.sh
. "$HERE/nginx-pair.sh"
nginx_pair_confs "$DIR" "$APP" "$NGA" "$NGB" 1 "$DIR/logs"

declare -A PID
under_callgrind() { # name command...
    local name=$1
    shift
    (cd "$DIR" && exec valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.$name" "$@" \
        >"$DIR/logs/$name.out" 2>&1) &
    PIDS+=($!)
    PID[$name]=$!
}
say "starting alice, bob, nginx A and B under callgrind"
under_callgrind alice "$PG_BIN" run -c "$DIR/a.yaml"
under_callgrind bob "$PG_BIN" run -c "$DIR/b.yaml"
under_callgrind nga "$NGINX" -p "$DIR" -c "$DIR/nga.conf" -g 'daemon off; master_process off;'
under_callgrind ngb "$NGINX" -p "$DIR" -c "$DIR/ngb.conf" -g 'daemon off; master_process off;'
for port in "$AO" "$BI" "$NGA" "$NGB"; do wait_port "$port"; done

measure() { # url name1 name2
    local url=$1
    "$PGB" load --url "$url" --connections 4 --rate 50 --duration 5 --warmup 1 >/dev/null
    for name in "$2" "$3"; do callgrind_control -z "${PID[$name]}" >/dev/null; done
    local out
    out=$("$PGB" load --url "$url" --connections 4 --rate "$RATE" --duration $((N / RATE)) --warmup 0)
    for name in "$2" "$3"; do callgrind_control -d "${PID[$name]}" >/dev/null; done
    local requests errors
    requests=$(echo "$out" | tr ' ' '\n' | sed -n 's/^requests=//p')
    errors=$(echo "$out" | tr ' ' '\n' | grep -E '^(errors|non2xx)=' | tr '\n' ' ')
    say "$2 and $3: $requests requests, $errors"
    eval "REQ_$2=$requests REQ_$3=$requests"
}
say "measuring the peergate pair, then the nginx pair ($N requests each)"
measure "http://127.0.0.1:$AO/peers/bob/hello" alice bob
measure "http://127.0.0.1:$NGA/peers/bob/hello" nga ngb
sleep 2

count() { # name -> "total sig tls copy alloc rest"
    local file
    file=$(ls "$DIR/cg.$1".* 2>/dev/null | sort | tail -1)
    [ -n "$file" ] || { say "no profile of $1"; exit 1; }
    local req
    req=$(eval echo "\$REQ_$1")
    "$PGB" callgrind --file "$file" --requests "$req" | tr ' ' '\n' | cut -d= -f2 | tr '\n' ' '
}
declare -A ROW
for name in alice bob nga ngb; do ROW[$name]=$(count "$name"); done
sum() { # a b -> column-wise sum
    paste -d' ' <(echo "${ROW[$1]}" | tr ' ' '\n' | sed '/^$/d') \
        <(echo "${ROW[$2]}" | tr ' ' '\n' | sed '/^$/d') | awk '{printf "%d ", $1 + $2}'
}
ROW[pg]=$(sum alice bob)
ROW[ng]=$(sum nga ngb)
echo
echo "instructions per request (callgrind, $N requests at $RATE req/s on 4 connections; $("$NGINX" -v 2>&1 | sed 's/.*: //'))"
printf '| %-24s | %9s | %9s | %9s | %9s | %9s | %9s |\n' process total Ed25519 TLS copies allocator "the rest"
printf '| %-24s | %9s | %9s | %9s | %9s | %9s | %9s |\n' ------------------------ --------- --------- --------- --------- --------- ---------
for r in "alice (sign):alice" "bob (verify):bob" "nginx A:nga" "nginx B:ngb" "peergate pair:pg" "nginx pair:ng"; do
    # shellcheck disable=SC2086
    printf '| %-24s | %9s | %9s | %9s | %9s | %9s | %9s |\n' "${r%%:*}" ${ROW[${r##*:}]}
done
read -r _ _ _ _ _ pg_rest <<<"${ROW[pg]}"
read -r _ _ _ _ _ ng_rest <<<"${ROW[ng]}"
echo "the rest, peergate pair / nginx pair: $(awk -v a="$pg_rest" -v b="$ng_rest" 'BEGIN { printf "%.2f", a / b }')"
echo "(Ed25519: signing and verifying with the hashes they need; copies: memcpy/memset, where"
echo " valgrind counts each byte rep movsb moves as an instruction; the rest: HTTP, the runtime,"
echo " the proxy's own logic, logging, system-call wrappers)"
