#!/usr/bin/env bash
# Sets up the two-portals example: two peergate installations, alice and bob, on this machine.
#
#   ./setup.sh          make (or keep) keys, certificates and allowlists; check both configs;
#                       start the two sample apps; print what to run next
#   ./setup.sh stop     stop the two sample apps
#   ./setup.sh clean    stop the apps and delete everything setup.sh made (keys included)
#
# Safe to run again: it keeps the identity keys and certificates it already made (a certificate
# is remade when it is about to expire or its CA changed), rewrites a peers.yaml only when its
# content changes, and does not start an app that is already running.
#
# Needs: peergate (on PATH, in $PEERGATE, or built in this repository's target/), openssl 1.1.1+,
# python3, and the ports 3001, 3002, 8443, 8444, 8480, 8481, 9464, 9465 free on 127.0.0.1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

sides=(alice bob)
declare -A app_port=([alice]=3001 [bob]=3002)
declare -A inbound_port=([alice]=8443 [bob]=8444)
declare -A other=([alice]=bob [bob]=alice)

say() { printf '%s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

find_peergate() {
    if [[ -n "${PEERGATE:-}" ]]; then
        [[ -x "$PEERGATE" ]] || die "PEERGATE=$PEERGATE is not an executable"
        printf '%s\n' "$PEERGATE"
    elif command -v peergate >/dev/null 2>&1; then
        command -v peergate
    else
        local candidate
        for candidate in ../../target/release/peergate ../../target/debug/peergate; do
            if [[ -x "$candidate" ]]; then
                printf '%s\n' "$(cd "$(dirname "$candidate")" && pwd)/peergate"
                return
            fi
        done
        die "peergate not found: build it (cargo build --release) and put target/release on PATH, or set PEERGATE=/path/to/peergate"
    fi
}

app_running() { # side
    local pidfile="run/$1-app.pid"
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop_apps() {
    local side pid
    for side in "${sides[@]}"; do
        if app_running "$side"; then
            pid="$(cat "run/$side-app.pid")"
            kill "$pid"
            say "stopped $side's app (pid $pid)"
        fi
        rm -f "run/$side-app.pid"
    done
}

if [[ "${1:-}" == "stop" ]]; then
    stop_apps
    exit 0
elif [[ "${1:-}" == "clean" ]]; then
    stop_apps
    for side in "${sides[@]}"; do
        rm -rf "$side/identity.pem" "$side/peers.yaml" "$side/tls"
    done
    rm -rf run
    say "removed keys, certificates, peers files and run/"
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument $1 (expected nothing, stop or clean)"
fi

command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the test certificates"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to run the sample apps"
peergate="$(find_peergate)"
say "using $peergate ($("$peergate" --version))"
umask 077 # keys and certificates readable by their owner only

# 1. Identity keys: one Ed25519 key per installation, made once and kept.
for side in "${sides[@]}"; do
    if [[ -f "$side/identity.pem" ]]; then
        say "$side: keeping $side/identity.pem"
    else
        "$peergate" keygen -o "$side/identity.pem" >/dev/null
        say "$side: made $side/identity.pem"
    fi
done

# 2. TLS: a throwaway CA per side, and a server certificate from it for localhost and 127.0.0.1.
#    Each side trusts the other's CA (tls.peer_ca_file), not the system roots.
valid_for_a_day() { [[ -f "$1" ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1; }

for side in "${sides[@]}"; do
    tls="$side/tls"
    mkdir -p "$tls"
    if ! valid_for_a_day "$tls/ca.pem" || [[ ! -f "$tls/ca-key.pem" ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" -days 30 \
            -subj "/CN=peergate two-portals test CA ($side)" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" 2>/dev/null
        rm -f "$tls/cert.pem" # a new CA means a new server certificate
        say "$side: made test CA $tls/ca.pem"
    fi
    if ! valid_for_a_day "$tls/cert.pem" || [[ ! -f "$tls/key.pem" ]] \
        || ! openssl verify -CAfile "$tls/ca.pem" "$tls/cert.pem" >/dev/null 2>&1; then
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$tls/key.pem" -out "$tls/cert.csr" -subj "/CN=localhost" 2>/dev/null
        openssl x509 -req -in "$tls/cert.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" \
            -set_serial "0x$(openssl rand -hex 16)" -days 30 -out "$tls/cert.pem" \
            -extfile <(printf '%s\n' \
                "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=serverAuth" \
                "subjectAltName=DNS:localhost,IP:127.0.0.1" \
                "authorityKeyIdentifier=keyid") 2>/dev/null
        rm -f "$tls/cert.csr"
        say "$side: made server certificate $tls/cert.pem (localhost, 127.0.0.1)"
    else
        say "$side: keeping $tls/cert.pem"
    fi
done
for side in "${sides[@]}"; do
    # What you would receive from your peer out of band, next to their public key.
    cp "${other[$side]}/tls/ca.pem" "$side/tls/peer-ca.pem"
done

# 3. Allowlists: each side's peers.yaml lists the other, with the public key `peergate id` prints.
declare -A short_id public_key
for side in "${sides[@]}"; do
    info="$("$peergate" id -k "$side/identity.pem")"
    short_id[$side]="$(awk '$1 == "short" && $2 == "ID" { print $3 }' <<<"$info")"
    public_key[$side]="$(awk '$1 == "public" && $2 == "key" { print $3 }' <<<"$info")"
    [[ -n "${short_id[$side]}" && -n "${public_key[$side]}" ]] \
        || die "could not read the short ID and public key from: peergate id -k $side/identity.pem"
done
for side in "${sides[@]}"; do
    peer="${other[$side]}"
    new="$(cat <<EOF
# $side's allowlist, written by setup.sh (which rewrites it when it runs again).
# peergate reloads this file when it changes.
peers:
  - name: $peer
    public_key: "${public_key[$peer]}"   # from: peergate id -k $peer/identity.pem
    url: https://localhost:${inbound_port[$peer]}
EOF
)"
    if [[ -f "$side/peers.yaml" ]] && [[ "$(cat "$side/peers.yaml")" == "$new" ]]; then
        say "$side: keeping $side/peers.yaml ($peer, ${short_id[$peer]})"
    else
        # Write and rename, so a running peergate never reads a half-written allowlist.
        printf '%s\n' "$new" >"$side/peers.yaml.tmp"
        chmod 0644 "$side/peers.yaml.tmp"
        mv -f "$side/peers.yaml.tmp" "$side/peers.yaml"
        say "$side: wrote $side/peers.yaml ($peer, ${short_id[$peer]})"
    fi
done

# 4. Both configurations must pass peergate check.
for side in "${sides[@]}"; do
    "$peergate" check -c "$side/peergate.yaml" >/dev/null \
        || die "$side/peergate.yaml does not pass peergate check (see above)"
    say "$side: peergate check -c $side/peergate.yaml: OK"
done

# 5. The sample apps, in the background; logs in run/.
mkdir -p run
for side in "${sides[@]}"; do
    port="${app_port[$side]}"
    if app_running "$side"; then
        say "$side: app already running on 127.0.0.1:$port (pid $(cat "run/$side-app.pid"))"
        continue
    fi
    nohup python3 app.py "$side" "$port" >"run/$side-app.log" 2>&1 &
    echo $! >"run/$side-app.pid"
    for _ in $(seq 50); do
        if python3 - "$port" <<'PY' 2>/dev/null; then break; fi
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
PY
        app_running "$side" || die "$side's app did not start (is 127.0.0.1:$port taken?); see run/$side-app.log"
        sleep 0.1
    done
    app_running "$side" || die "$side's app did not start; see run/$side-app.log"
    say "$side: app listening on 127.0.0.1:$port (pid $(cat "run/$side-app.pid"), log run/$side-app.log)"
done

cat <<EOF

Ready. alice is ${short_id[alice]}, bob is ${short_id[bob]}. Now, in two more terminals:

  $peergate run -c $here/alice/peergate.yaml
  $peergate run -c $here/bob/peergate.yaml

then try (see README.md for what each answers):

  curl -s http://127.0.0.1:8480/peers/bob/hello
  curl -s http://127.0.0.1:8480/peers/${short_id[bob]}/hello
  curl -s -x http://127.0.0.1:8480 http://localhost:8444/hello
  curl -si --cacert $here/bob/tls/ca.pem https://localhost:8444/hello
  curl -s http://127.0.0.1:9465/metrics | grep '^peergate_'

Stop the sample apps with: ./setup.sh stop
EOF
