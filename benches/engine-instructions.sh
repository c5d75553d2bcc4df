#!/usr/bin/env sh
# Counts, with valgrind's callgrind, the instructions the signature engine runs per verified
# request (the whole pipeline, as the criterion bench verify_pipeline_1k) and per raw strict
# Ed25519 verification (as raw_ed25519_verify), and prints both and their ratio: the engine
# ratio of benches/engine-ratio.sh in a number that other tenants of the machine cannot move.
#
#   benches/engine-instructions.sh
#
# valgrind does not emulate AVX-512 IFMA or the SHA extensions, so the Ed25519 verification runs
# on curve25519-dalek's AVX2 backend and SHA-256 in software here: both cost more instructions
# than the real run executes, and the ratio is not the timed one. Compare counts with counts.
# Honours CARGO_TARGET_DIR; installs valgrind from Debian's packages when it is missing (root).
set -eu

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

if ! command -v valgrind >/dev/null 2>&1; then
    echo "engine-instructions: installing valgrind" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi
cargo build --release --quiet -p peergate-signature --example verify_count
bin="$target_dir/release/examples/verify_count"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions inside `verify_count::<which>` over the whole pool, per request (the example
# prints "verified N requests").
count() {
    valgrind --tool=callgrind --callgrind-out-file="$out/$1" \
        --toggle-collect="verify_count::$1" "$bin" "$1" >"$out/$1.txt" 2>"$out/$1.log" || {
        cat "$out/$1.log" >&2
        exit 1
    }
    requests=$(sed -n 's/^verified \([0-9]*\) requests$/\1/p' "$out/$1.txt")
    total=$(sed -n 's/^summary: //p; s/^totals: //p' "$out/$1" | head -n 1)
    if [ -z "$requests" ] || [ -z "$total" ]; then
        echo "engine-instructions: no count from the $1 run" >&2
        exit 1
    fi
    echo $((total / requests))
}

pipeline=$(count pipeline)
raw=$(count raw)
awk -v p="$pipeline" -v r="$raw" 'BEGIN {
    printf "verify pipeline, 1 KiB body: %d instructions per request\n", p
    printf "raw strict Ed25519 verify:   %d instructions per request\n", r
    printf "the engine beside the verification: %d instructions per request\n", p - r
    printf "ratio pipeline / raw: %.3f\n", p / r
}'
