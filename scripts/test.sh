#!/usr/bin/env bash
# Runs ringway's whole test suite on a fresh Debian machine: installs what the tests use
# (curl for the admin API checks; build tools for the Rust toolchain's C deps; shellcheck;
# procps for kill; systemd for systemd-analyze, which verifies the units in tuning/systemd;
# prometheus for promtool, which parses the Grafana dashboard's queries in tuning/grafana;
# openssl and haproxy for the shared-address tests),
# then script lints, the host check, formatting, lints, unit and integration tests (ringway and
# the bench/load tool), and the Debian package's test (scripts/test-deb.sh; lintian).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
# scripts/lib's unit tests (the perf-check verdict logic) run on python3.
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The integration tests send SIGTERM with kill(1) (procps), not a shell builtin.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)
# The units test runs `systemd-analyze verify` on tuning/systemd/*.service (package systemd:
# minimal containers lack it; installing it there starts nothing).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The workers test checks every query of tuning/grafana/ringway.json with `promtool check
# rules` (package prometheus; in a container nothing starts, on a systemd host the package
# also enables a prometheus service: `systemctl disable --now prometheus` if unwanted).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# tests/it/share.rs (routes sharing an address): openssl makes the TLS servers' certificates
# and captures real ClientHellos (req, s_client); python3 (above) runs those TLS servers;
# HAProxy reads the PROXY headers ringway sends (nginx stands in where only nginx is
# installed; on a systemd host the haproxy package also starts an idle haproxy service).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || [ -x /usr/sbin/nginx ] || need+=(haproxy)
# scripts/test-deb.sh (the Debian package): lintian checks it (about a minute to install on
# Debian 12: ~140 packages, mostly Perl), dpkg-shlibdeps (dpkg-dev) computes its Depends.
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }

# The tests open ~4,000 sockets at once (1,000 proxied connections: client, backend and the
# proxy's two); raise the soft fd limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== shellcheck scripts"
shellcheck scripts/*.sh scripts/perf-check bench/*.sh .ci/run
echo "== scripts/lib unit tests (perf-check's verdict: pooling, re-measuring)"
python3 -m unittest discover -s scripts/lib -p 'test_*.py'
echo "== scripts/check-host.sh (read-only host check; warnings are fine, it must run and exit 0)"
bash scripts/check-host.sh >/dev/null
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
# The Debian package (README, "Debian package"): builds it with cargo-deb (installed when
# missing: ~3.5 min with one build job), then checks its contents and configuration, a dpkg
# install, upgrade and purge in a throw-away chroot (as root), and lintian. The release build
# is the one scripts/perf-check reuses next in CI.
echo "== scripts/test-deb.sh"
bash scripts/test-deb.sh
