#!/usr/bin/env bash
# Fuzzes the codec's decode_frame target for SECONDS (default 30).
#
#   fuzz/run.sh          # 30 s, what CI can afford
#   fuzz/run.sh 3600     # a long run before a release
#
# New interesting inputs go to fuzz/corpus/decode_frame (private, gitignored) and accumulate
# across runs; the committed seeds in fuzz/seeds/decode_frame are only read. A crash is written
# to fuzz/artifacts/decode_frame/ and the script exits non-zero; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run decode_frame fuzz/artifacts/decode_frame/<file>
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail

seconds="${1:-30}"
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p fuzz/corpus/decode_frame
RUSTC_BOOTSTRAP=1 cargo fuzz run decode_frame fuzz/corpus/decode_frame fuzz/seeds/decode_frame \
    -- -max_total_time="${seconds}"
