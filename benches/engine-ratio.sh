#!/usr/bin/env sh
# Runs the signature engine's verify benches and prints how much the whole verify pipeline
# (headers, base, strict Ed25519 verification, replay cache, 1 KiB Content-Digest check) costs
# relative to one raw strict Ed25519 verification: the ratio of the two criterion medians.
#
#   benches/engine-ratio.sh                      # criterion's default timing
#   benches/engine-ratio.sh --measurement-time 5 # extra arguments go to criterion
#
# Honours CARGO_TARGET_DIR. Timing depends on the machine and its load: run it twice on a
# shared machine. Prints the medians (ns) and the ratio; never fails on the number.
set -eu

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

cargo bench -p peergate-signature --bench signature -- \
    '^(verify_pipeline_1k|raw_ed25519_verify)$' "$@"

# Median point estimate (ns) from criterion's estimates.json.
median() {
    file="$target_dir/criterion/$1/new/estimates.json"
    if [ ! -f "$file" ]; then
        echo "engine-ratio: $file not found (did the bench run?)" >&2
        exit 1
    fi
    # {"mean":{...},"median":{"confidence_interval":{...},"point_estimate":N,...},...}
    sed -E 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([^,}]+).*/\1/' "$file"
}

pipeline=$(median verify_pipeline_1k)
raw=$(median raw_ed25519_verify)
awk -v p="$pipeline" -v r="$raw" 'BEGIN {
    printf "verify_pipeline_1k median: %.0f ns\n", p
    printf "raw_ed25519_verify median: %.0f ns\n", r
    printf "ratio verify_pipeline_1k / raw_ed25519_verify: %.3f\n", p / r
}'
