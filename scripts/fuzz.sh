#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz/) for SECONDS each, in release, one after another.
# Usage: scripts/fuzz.sh [SECONDS]     (default 60)
# A failure stops the run; the failing input is in target/tmp/fuzz-crashes/ (tests/fuzz/README.md).
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 64
    ;;
esac

cd "$(dirname "$0")/.."
cargo test --release --test fuzz --no-run

for target in tls http proxy_v1 proxy_v2 route_toml admin_json; do
  echo "== fuzz $target for ${seconds}s"
  RINGWAY_FUZZ_SECONDS="$seconds" cargo test --release --test fuzz -- \
    --exact "$target" --test-threads=1 --nocapture
done
echo "== all fuzz targets passed"
