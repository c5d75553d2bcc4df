#!/usr/bin/env bash
# peergate load harness: peergate and nginx side by side on loopback, one table.
#
#   benches/load/run.sh                  # everything, ~6 minutes
#   DURATION=5 benches/load/run.sh       # shorter runs
#
# What it runs (each setup in the same run, same load generator; compared pairs in the order
# A B B A, each number the mean of its two runs):
#   app        the sample app alone (baseline)
#   inbound    client --TLS--> proxy --> app           (peergate: verify each signature)
#   full path  client --> proxy A --TLS--> proxy B --> app
#              (peergate: alice outbound signs, bob inbound verifies; nginx: plain proxies)
#   many       the two full paths again with MANY (1000) connections
#   scale      bob with 2 peers vs 100 000 peers; load and reload times; replay cache memory
#   latency    constant rate at half, then a quarter of the full-path peak: added p99 over the
#              app alone
#
# Environment: DURATION (s, default 10), WARMUP (s, 2), CONNS (closed-loop connections, 32),
# RATE_CONNS (constant-rate connections, 16), PEERS (large allowlist, 100000), LOGS (on|off:
# per-request log lines of peergate and access log of nginx, default on for both),
# MANY (default 1000: the full paths again with this many connections, where idle upstream
# connections and per-connection memory count; 0 skips it), SUSTAIN (s, default 60: bob with
# the large allowlist at its peak for a whole replay window, for its resident memory when the
# replay cache holds all it ever holds; 0 skips it),
# WORKERS (default 2: nginx's worker_processes and peergate's listen.threads, the same on both
# sides whatever the machine), KEEP=1 (keep the work directory), CARGO_TARGET_DIR (where to
# build), PG_BIN (a peergate binary to measure instead of building this tree's: the same table
# for an older build, run in turn with the current one).
# Needs: cargo, and nginx + wrk (installed with apt-get when missing, as root).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
RATE_CONNS=${RATE_CONNS:-16}
PEERS=${PEERS:-100000}
SUSTAIN=${SUSTAIN:-60}
MANY=${MANY:-1000}
# The many-connections runs hold ~2 descriptors per connection in each proxy and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LOGS=${LOGS:-on}
WORKERS=${WORKERS:-2}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from Debian's packages"
    if ! apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
        apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

say "building peergate (release) and the harness tools"
if [ -z "${PG_BIN:-}" ]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin peergate)
fi
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET/load cargo build --release --quiet)
PG=${PG_BIN:-$TARGET/release/peergate}
PGB=$TARGET/load/release/pgbench
[ "$(getconf CLK_TCK)" = 100 ] || { echo "CLK_TCK is not 100; pgbench assumes it" >&2; exit 1; }

# --- everything started is stopped on exit ----------------------------------------------------
DIR=$(mktemp -d /tmp/peergate-load.XXXXXX)
chmod 755 "$DIR"
mkdir "$DIR/logs"
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ] || [ $status -ne 0 ]; then
        echo "work directory kept: $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port [seconds]
    local i
    for ((i = 0; i < ${2:-30} * 20; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

status_kib() { # field pids... -> sum of that /proc/<pid>/status field (KiB)
    local field=$1 sum=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        sum=$((sum + ${v:-0}))
    done
    echo $sum
}
hwm_kib() { status_kib VmHWM "$@"; } # the most each process ever held, summed
rss_kib() { status_kib VmRSS "$@"; } # what they hold now, summed

read -r APP_PORT BOB_IN BOB_OUT BOB_ADMIN ALICE_IN ALICE_OUT ALICE_ADMIN BIG_IN BIG_OUT BIG_ADMIN NGA_PORT NGB_PORT <<<"$("$PGB" ports --count 12)"

# --- keys, certificates, configurations -------------------------------------------------------
say "work directory $DIR"
"$PGB" certs --dir "$DIR"
read -r ALICE_spki ALICE_key_id ALICE_short_id <<<"$("$PGB" identity --out "$DIR/alice.pem")"
read -r BOB_spki BOB_key_id BOB_short_id <<<"$("$PGB" identity --out "$DIR/bob.pem")"

"$PGB" peers --count 1 --out "$DIR/alice-peers.yaml" --peer "bob,$BOB_spki,https://127.0.0.1:$BOB_IN"
"$PGB" peers --count 2 --out "$DIR/bob-peers.yaml" --peer "alice,$ALICE_spki,https://127.0.0.1:$ALICE_IN"
"$PGB" peers --count "$PEERS" --out "$DIR/big-peers.yaml" --peer "alice,$ALICE_spki,https://127.0.0.1:$ALICE_IN"

pg_config() { # name inbound outbound admin peers_file
    cat >"$DIR/$1.yaml" <<EOF
identity: { key_file: $2.pem, name: $2, hosts: ["127.0.0.1", "localhost"] }
listen: { inbound: "127.0.0.1:$3", outbound: "127.0.0.1:$4", admin: "127.0.0.1:$5", threads: $WORKERS }
tls: { cert_file: cert.pem, key_file: key.pem, peer_ca_file: ca.pem }
app: { upstream: "127.0.0.1:$APP_PORT" }
peers_file: $6
EOF
}
pg_config alice alice "$ALICE_IN" "$ALICE_OUT" "$ALICE_ADMIN" alice-peers.yaml
pg_config bob bob "$BOB_IN" "$BOB_OUT" "$BOB_ADMIN" bob-peers.yaml
pg_config big bob "$BIG_IN" "$BIG_OUT" "$BIG_ADMIN" big-peers.yaml
# alice reaches bob, bob-with-100k-peers on its own port: a second peers file for alice.
"$PGB" peers --count 1 --out "$DIR/alice-big-peers.yaml" --peer "bob,$BOB_spki,https://127.0.0.1:$BIG_IN"

if [ "$LOGS" = on ]; then
    PG_LOG=info
    NG_LOGS=$DIR/logs
else
    PG_LOG=warn
    NG_LOGS=off
fi

# nginx A and B, as callgrind.sh configures them too (nginx-pair.sh).
# shellcheck source=benches/load/nginx-pair.sh
. "$HERE/nginx-pair.sh"
nginx_pair_confs "$DIR" "$APP_PORT" "$NGA_PORT" "$NGB_PORT" "$WORKERS" "$NG_LOGS"

# --- processes --------------------------------------------------------------------------------
start_pg() { # name -> sets PID_<name>
    # Logs go to another directory than the configuration: the reloader watches the
    # configuration's directory, and a log written there wakes it on every line.
    (cd "$DIR" && RUST_LOG=$PG_LOG exec "$PG" run -c "$DIR/$1.yaml" >"$DIR/logs/$1.log" 2>&1) &
    PIDS+=($!)
    eval "PID_$1=$!"
}
start_nginx() { # name port -> sets PID_<name> (master) and WORKERS_<name>
    "$NGINX" -p "$DIR" -c "$DIR/$1.conf" -g 'daemon off;' >"$DIR/$1.out" 2>&1 &
    PIDS+=($!)
    eval "PID_$1=$!"
    wait_port "$2"
    sleep 0.2
    eval "WORKERS_$1=\"$(pgrep -P "$(eval echo "\$PID_$1")" | tr '\n' ' ')\""
}
csv() { echo "$*" | tr -s ' ' ',' | sed 's/^,//; s/,$//'; }

say "starting the app, nginx A and B, peergate alice and bob"
"$PGB" app --listen "127.0.0.1:$APP_PORT" --threads 1 &
PIDS+=($!)
PID_app=$!
wait_port "$APP_PORT"
start_nginx ngb "$NGB_PORT"
start_nginx nga "$NGA_PORT"
start_pg bob
start_pg alice
wait_port "$BOB_IN"
wait_port "$ALICE_OUT"
NGB_ALL="$PID_ngb $WORKERS_ngb"
NGA_ALL="$PID_nga $WORKERS_nga"

# --- measurements -----------------------------------------------------------------------------
RESULTS=$DIR/results.txt
: >"$RESULTS"
run() { # key pids url [pgbench load options...]
    local key=$1 pids=$2 url=$3
    shift 3
    say "$key"
    local out
    out=$("$PGB" load --url "$url" --duration "$DURATION" --warmup "$WARMUP" --pids "$(csv "$pids")" "$@")
    echo "$key $out" | tee -a "$RESULTS" >&2
}
field() { # key name
    awk -v k="$1" -v f="$2" '$1 == k { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$RESULTS" | tail -1
}
APP_URL="http://127.0.0.1:$APP_PORT/hello"
BOB_URL="https://127.0.0.1:$BOB_IN/hello"
NGB_URL="https://127.0.0.1:$NGB_PORT/hello"
ALICE_URL="http://127.0.0.1:$ALICE_OUT/peers/bob/hello"
NGA_URL="http://127.0.0.1:$NGA_PORT/peers/bob/hello"

# Two runs of one setup -> one line: the mean of each number (errors added up).
merge() { # key key1 key2
    awk -v k="$1" -v a="$2" -v b="$3" '
        $1 == a || $1 == b { n++; for (i = 2; i <= NF; i++) { split($i, kv, "="); sum[kv[1]] += kv[2]; order[i] = kv[1] } m = NF }
        END { line = k; for (i = 2; i <= m; i++) { f = order[i]; v = (f == "errors" || f == "non2xx" || f == "inline_signed") ? sum[f] : sum[f] / n; line = line " " f "=" v } print line }
    ' "$RESULTS" >>"$RESULTS"
}
# A compared pair in the order A B B A, so that a change in the machine's load during the
# pair weighs on both sides alike.
pair() { # key_a pids_a url_a opts_a... -- key_b pids_b url_b opts_b...
    local a=() b=() seen=0 x
    for x in "$@"; do
        if [ "$x" = -- ]; then seen=1; elif [ $seen = 0 ]; then a+=("$x"); else b+=("$x"); fi
    done
    run "${a[0]}_1" "${a[@]:1}"
    run "${b[0]}_1" "${b[@]:1}"
    run "${b[0]}_2" "${b[@]:1}"
    run "${a[0]}_2" "${a[@]:1}"
    merge "${a[0]}" "${a[0]}_1" "${a[0]}_2"
    merge "${b[0]}" "${b[0]}_1" "${b[0]}_2"
}

# Peak (closed loop).
run app "$PID_app" "$APP_URL" --connections "$CONNS"
pair ng_in "$NGB_ALL" "$NGB_URL" --connections "$CONNS" --ca "$DIR/ca.pem" --sign "$DIR/alice.pem" --sign-once \
    -- pg_in "$PID_bob" "$BOB_URL" --connections "$CONNS" --ca "$DIR/ca.pem" --sign "$DIR/alice.pem"
pair ng_full "$NGA_ALL $NGB_ALL" "$NGA_URL" --connections "$CONNS" \
    -- pg_full "$PID_alice $PID_bob" "$ALICE_URL" --connections "$CONNS"
HWM_ng_in=$(hwm_kib $NGB_ALL)
HWM_pg_in=$(hwm_kib "$PID_bob")
HWM_ng_full=$(hwm_kib $NGA_ALL $NGB_ALL)
HWM_pg_full=$(hwm_kib "$PID_alice" "$PID_bob")
REPLAY_bob=$(curl -s "http://127.0.0.1:$BOB_ADMIN/metrics" | awk '/^peergate_replay_cache_entries/ {print $2}')

if [ "${QUICK:-0}" = 1 ]; then
    SKIP_REST=1
else
    SKIP_REST=0
fi
RATE=- RATE4=- WRK_ng_full=- WRK_pg_full=- CHECK_S=- STARTUP_S=- RELOAD_S=- KEPT_S=- RSS_big=0 HWM_big_kept=0 HWM_big_after_reload=0 HWM_pg_in_big= REPLAY_big=- REPLAY_MEM=-
RSS_big_idle=0 RSS_big_sustained=0 RSS_big_after_reload=0 SUSTAINED=- HWM_ng_full_many= HWM_pg_full_many=
if [ $SKIP_REST = 0 ]; then
# Constant rate at half, then a quarter of the peergate full-path peak: the app alone, then the
# nginx pair and the peergate pair (A B B A). A p99 is the tail of one run on a shared machine,
# so each pair's is the mean of two runs.
PEAK=$(field pg_full rps)
RATE=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 2 }')
RATE4=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 4 }')
run app_rate "$PID_app" "$APP_URL" --connections "$RATE_CONNS" --rate "$RATE"
pair ng_full_rate "$NGA_ALL $NGB_ALL" "$NGA_URL" --connections "$RATE_CONNS" --rate "$RATE" \
    -- pg_full_rate "$PID_alice $PID_bob" "$ALICE_URL" --connections "$RATE_CONNS" --rate "$RATE"
run app_rate4 "$PID_app" "$APP_URL" --connections "$RATE_CONNS" --rate "$RATE4"
pair ng_full_rate4 "$NGA_ALL $NGB_ALL" "$NGA_URL" --connections "$RATE_CONNS" --rate "$RATE4" \
    -- pg_full_rate4 "$PID_alice $PID_bob" "$ALICE_URL" --connections "$RATE_CONNS" --rate "$RATE4"

# wrk cross-check of the two full paths (unsigned from the client, as an app sends them).
say "wrk cross-check"
WRK_ng_full=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "$NGA_URL" | awk '/Requests\/sec/ {print $2}')
WRK_pg_full=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "$ALICE_URL" | awk '/Requests\/sec/ {print $2}')

# Scale: bob with $PEERS peers (a separate process on its own ports).
say "scale: $PEERS peers"
sleep 1
CHECK_S=$( { TIMEFORMAT=%R; time "$PG" check -c "$DIR/big.yaml" >/dev/null; } 2>&1 | tail -1)
t0=$(date +%s.%N)
start_pg big
wait_port "$BIG_IN" 120
STARTUP_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
sleep 1
RSS_big_idle=$(rss_kib "$PID_big")
# alice now calls the big bob
cp "$DIR/alice-peers.yaml" "$DIR/alice-small-peers.yaml"
cp "$DIR/alice-big-peers.yaml" "$DIR/alice-peers.yaml"
kill -HUP "$PID_alice"
sleep 1
BIG_URL="https://127.0.0.1:$BIG_IN/hello"
pair pg_in_small "$PID_bob" "$BOB_URL" --connections "$CONNS" --ca "$DIR/ca.pem" --sign "$DIR/alice.pem" \
    -- pg_in_big "$PID_big" "$BIG_URL" --connections "$CONNS" --ca "$DIR/ca.pem" --sign "$DIR/alice.pem"
run pg_full_big "$PID_alice $PID_big" "$ALICE_URL" --connections "$CONNS"
HWM_pg_in_big=$(hwm_kib "$PID_big")
RSS_big=$(rss_kib "$PID_big")
REPLAY_big=$(curl -s "http://127.0.0.1:$BIG_ADMIN/metrics" | awk '/^peergate_replay_cache_entries/ {print $2}')
# Reload: SIGHUP, then wait for the reload timestamp to move.
last_reload() { curl -s "http://127.0.0.1:$BIG_ADMIN/metrics" | awk '/^peergate_config_last_reload_success_timestamp_seconds/ {print $2}'; }
reload_once() {
    local before t0 now i
    before=$(last_reload)
    t0=$(date +%s.%N)
    kill -HUP "$PID_big"
    for ((i = 0; i < 1000; i++)); do
        now=$(last_reload)
        if [ -n "$now" ] && [ "$now" != "$before" ]; then
            awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f", b - a }'
            return
        fi
        sleep 0.02
    done
    echo timeout
}
# A SIGHUP with the peers file as it was keeps the table in force (nothing is parsed again);
# then four reloads that each rename one peer, which build a new table beside the one serving.
KEPT_S=$(reload_once)
sleep 1
HWM_big_kept=$(hwm_kib "$PID_big")
RELOADS=""
for ((r = 0; r < 4; r++)); do
    sed -i "s/^  - name: filler-000001.*\$/  - name: filler-000001-r$r/" "$DIR/big-peers.yaml"
    RELOADS="$RELOADS $(reload_once)"
    sleep 1
done
RELOAD_S=$(echo "$RELOADS" | awk '{ printf "first %ss, then %ss %ss %ss", $1, $2, $3, $4 }')
HWM_big_after_reload=$(hwm_kib "$PID_big")
sleep 1
RSS_big_after_reload=$(rss_kib "$PID_big")

# The large allowlist at the peak rate for a whole replay window: the resident size when the
# replay cache holds all a gateway at that rate ever holds (a 10-s run leaves it a sixth full).
# Presigned signatures expire 60 s after `created`, so the window is covered by two runs, each
# with its own freshly signed pool, dated 25 s ahead (within the 30-s clock skew bob allows):
# the first run's nonces are still remembered when the second ends. The count held at the end
# is printed.
if [ "$SUSTAIN" -gt 0 ]; then
    HALF=$(( (SUSTAIN + 1) / 2 ))
    PRESIGN=$(awk -v r="$(field pg_in_big rps)" -v d="$HALF" 'BEGIN { printf "%d", r * d * 1.3 + 1000 }')
    for half in 1 2; do
        run "pg_in_big_sustained_$half" "$PID_big" "$BIG_URL" --connections "$CONNS" --ca "$DIR/ca.pem" --sign "$DIR/alice.pem" --duration "$HALF" --warmup 0 --presign "$PRESIGN" --created-ahead 25
    done
    merge pg_in_big_sustained pg_in_big_sustained_1 pg_in_big_sustained_2
    RSS_big_sustained=$(rss_kib "$PID_big")
    SUSTAINED="$(field pg_in_big_sustained rps | awk '{ printf "%.0f", $1 }') req/s, two runs of ${HALF}s, $(curl -s "http://127.0.0.1:$BIG_ADMIN/metrics" | awk '/^peergate_replay_cache_entries/ {print $2}') nonces held at the end"
fi

# Replay cache at the measured peak, held for a whole freshness window (60 s for peergate's
# signatures: a nonce is kept until expires = created + 60 s).
PEAK_IN=$(field pg_in rps)
REPLAY_MEM=$("$PGB" replay-mem --rate "$PEAK_IN" --window 60 --capacity 1000000)

# The full paths with many connections: more than nginx keeps idle as configured here
# (`keepalive 128` per worker; peergate keeps up to 1 024 per upstream), so connection reuse
# and the memory a connection holds show. Last, because the connections they leave kept
# (60 s) would weigh on the runs after them. Peak RSS after these runs is the most each pair
# held in the whole run.
if [ "$MANY" -gt 0 ]; then
    # alice calls bob again (the scale runs pointed it at the large bob).
    cp "$DIR/alice-small-peers.yaml" "$DIR/alice-peers.yaml"
    kill -HUP "$PID_alice"
    sleep 1
    pair ng_full_many "$NGA_ALL $NGB_ALL" "$NGA_URL" --connections "$MANY" \
        -- pg_full_many "$PID_alice $PID_bob" "$ALICE_URL" --connections "$MANY"
    HWM_ng_full_many=$(hwm_kib $NGA_ALL $NGB_ALL)
    HWM_pg_full_many=$(hwm_kib "$PID_alice" "$PID_bob")
fi
fi

# --- the table --------------------------------------------------------------------------------
machine() {
    echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
row() { # label key hwm_kib
    local rps p50 p99 cpu
    rps=$(field "$2" rps); p50=$(field "$2" p50_us); p99=$(field "$2" p99_us); cpu=$(field "$2" cpu_ms_per_1k)
    [ -n "$rps" ] || return 0
    printf '| %-44s | %9.0f | %8.2f | %8.2f | %12.3f | %12s |\n' "$1" "$rps" \
        "$(awk -v v="$p50" 'BEGIN { print v / 1000 }')" "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="$cpu" 'BEGIN { print v / 1000 }')" "$( [ -n "${3:-}" ] && awk -v v="$3" 'BEGIN { printf "%.1f", v / 1024 }' || echo -)"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
{
    machine
    echo "peergate $("$PG" --version 2>/dev/null | awk '{print $2}'), $("$NGINX" -v 2>&1 | sed 's/.*: //'); ${DURATION}s per run after ${WARMUP}s warm-up; $CONNS connections (closed loop); logs $LOGS; $WORKERS nginx workers and peergate threads per listener"
    echo
    echo "| setup                                        |   req/s   | p50 ms   | p99 ms   | CPU s/1k req | peak RSS MiB |"
    echo "| -------------------------------------------- | --------- | -------- | -------- | ------------ | ------------ |"
    row "app alone (baseline)" app
    row "nginx inbound: TLS -> app" ng_in "$HWM_ng_in"
    row "peergate inbound: TLS, verify -> app" pg_in "$HWM_pg_in"
    row "peergate inbound, $PEERS peers" pg_in_big "$HWM_pg_in_big"
    row "nginx A -> TLS -> nginx B -> app" ng_full "$HWM_ng_full"
    row "alice (sign) -> TLS -> bob (verify) -> app" pg_full "$HWM_pg_full"
    row "alice -> bob with $PEERS peers -> app" pg_full_big
    row "nginx A -> nginx B -> app, $MANY connections" ng_full_many "$HWM_ng_full_many"
    row "alice -> bob -> app, $MANY connections" pg_full_many "$HWM_pg_full_many"
    echo
    echo "ratios peergate/nginx (same run):"
    for pair in "inbound:pg_in:ng_in" "full path:pg_full:ng_full" "full path, $MANY connections:pg_full_many:ng_full_many"; do
        IFS=: read -r name pg ng <<<"$pair"
        [ -n "$(field "$pg" rps)" ] || continue
        echo "  $name: req/s $(ratio "$(field "$pg" rps)" "$(field "$ng" rps)"), p50 $(ratio "$(field "$pg" p50_us)" "$(field "$ng" p50_us)"), p99 $(ratio "$(field "$pg" p99_us)" "$(field "$ng" p99_us)"), CPU/req $(ratio "$(field "$pg" cpu_ms_per_1k)" "$(field "$ng" cpu_ms_per_1k)")"
    done
    echo "  wrk, full path: peergate $WRK_pg_full req/s, nginx $WRK_ng_full req/s: $(ratio "$WRK_pg_full" "$WRK_ng_full")"
    echo "  $PEERS peers / 2 peers, inbound (run as a pair): req/s $(ratio "$(field pg_in_big rps)" "$(field pg_in_small rps)"), p99 $(ratio "$(field pg_in_big p99_us)" "$(field pg_in_small p99_us)"), CPU/req $(ratio "$(field pg_in_big cpu_ms_per_1k)" "$(field pg_in_small cpu_ms_per_1k)")"
    echo
    echo "constant rate, $RATE_CONNS connections: half the peergate full-path peak ($RATE req/s), then a quarter ($RATE4 req/s); pairs: mean of two runs"
    echo "| setup                                        |   req/s   | p50 ms   | p99 ms   | CPU s/1k req | added p99 ms |"
    echo "| -------------------------------------------- | --------- | -------- | -------- | ------------ | ------------ |"
    for sfx in "" 4; do
        base99=$(field "app_rate$sfx" p99_us)
        for r in "app alone:app_rate" "nginx A -> nginx B -> app:ng_full_rate" "alice -> bob -> app:pg_full_rate"; do
            IFS=: read -r name key <<<"$r"
            key=$key$sfx
            [ -n "$(field "$key" rps)" ] || continue
            printf '| %-44s | %9.0f | %8.2f | %8.2f | %12.3f | %12.2f |\n' "$name" "$(field "$key" rps)" \
                "$(awk -v v="$(field "$key" p50_us)" 'BEGIN { print v / 1000 }')" \
                "$(awk -v v="$(field "$key" p99_us)" 'BEGIN { print v / 1000 }')" \
                "$(awk -v v="$(field "$key" cpu_ms_per_1k)" 'BEGIN { print v / 1000 }')" \
                "$(awk -v v="$(field "$key" p99_us)" -v b="$base99" 'BEGIN { print (v - b) / 1000 }')"
        done
    done
    echo
    echo "scale, $PEERS peers: \`peergate check\` ${CHECK_S}s (whole process), start to listening ${STARTUP_S}s, SIGHUP reload with the peers file unchanged ${KEPT_S}s (its table kept), with one peer renamed $RELOAD_S;"
    mib() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }'; }
    echo "  RSS (MiB): idle after start $(mib "$RSS_big_idle"), after its peak runs $(mib "$RSS_big"), after the reloads $(mib "$RSS_big_after_reload"),"
    echo "    at the peak rate held for a whole replay window $(mib "$RSS_big_sustained") ($SUSTAINED);"
    echo "    VmHWM (the most it ever held) $(mib "$HWM_big_kept") after the peak runs and the unchanged reload, $(mib "$HWM_big_after_reload") after the reloads with a changed file"
    echo "replay cache (capacity 1 000 000): bob held $REPLAY_bob entries after its runs, big bob $REPLAY_big;"
    echo "  the inbound peak rate held for a whole 60-s window (signature lifetime): $REPLAY_MEM"
    echo
    echo "errors (connection/non-2xx): $(for k in app ng_in pg_in pg_in_small pg_in_big pg_in_big_sustained ng_full pg_full pg_full_big ng_full_many pg_full_many app_rate ng_full_rate pg_full_rate app_rate4 ng_full_rate4 pg_full_rate4; do printf '%s=%s/%s ' "$k" "$(field "$k" errors)" "$(field "$k" non2xx)"; done)"
    echo "client-side signing: pg_in presigned $(field pg_in presign_s)s, inline $(field pg_in inline_signed); pg_in_big inline $(field pg_in_big inline_signed)"
} | tee "$DIR/table.md"
