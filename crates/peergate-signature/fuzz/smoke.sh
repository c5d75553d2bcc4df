#!/usr/bin/env sh
# Fuzz smoke run for CI: installs cargo-fuzz if missing, then fuzzes the verify_headers target
# for N seconds (default 30), starting from the committed seeds. Exits non-zero when the
# target crashes (the input is saved under fuzz/artifacts/verify_headers/).
#
#   crates/peergate-signature/fuzz/smoke.sh [SECONDS]
#
# cargo-fuzz needs a nightly compiler (for -Zsanitizer). With a nightly toolchain installed
# through rustup it is used; otherwise the stable compiler is run with RUSTC_BOOTSTRAP=1.
set -eu

seconds="${1:-30}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    set -- cargo +nightly fuzz
else
    echo "fuzz smoke: no nightly toolchain, using RUSTC_BOOTSTRAP=1 with the stable compiler" >&2
    export RUSTC_BOOTSTRAP=1
    set -- cargo fuzz
fi

# corpus/ (written by the fuzzer, git-ignored) first; seeds/ is only read.
mkdir -p corpus/verify_headers
"$@" run verify_headers corpus/verify_headers seeds/verify_headers -- \
    -dict=verify_headers.dict -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
