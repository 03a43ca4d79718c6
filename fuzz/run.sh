#!/usr/bin/env bash
# Run each fuzz target for a bounded time (default 60 s each): `fuzz/run.sh [SECONDS]`.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Install the tool once with `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
mkdir -p corpus/idx corpus/checkpoint
# Seed the corpora with real inputs.
gzip -dc ../assets/mnist/t10k-labels-idx1-ubyte.gz > corpus/idx/labels
head -c 4000 <(gzip -dc ../assets/mnist/t10k-images-idx3-ubyte.gz) > corpus/idx/images-prefix
for target in idx checkpoint; do
    echo "fuzzing $target for ${secs}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=4096
done
