#!/usr/bin/env bash
# Builds the Debian package (cargo-deb; metadata: [package.metadata.deb] in Cargo.toml) and
# prints its path. It installs /usr/bin/ringway, ringway.service and ringway@.service,
# /usr/lib/sysctl.d/90-ringway.conf and a commented /etc/ringway/ringway.toml; the maintainer
# scripts are in tuning/debian/.
#
#   scripts/deb.sh              build the release binary, then the package
#   scripts/deb.sh --no-build   package target/release/ringway as it is (built earlier)
#
# Needs cargo-deb (cargo install cargo-deb --locked; scripts/test-deb.sh installs it) and
# dpkg-dev's tools (dpkg-shlibdeps, for Depends: $auto; present on Debian with build-essential).
# Build jobs: CARGO_BUILD_JOBS (cargo's own variable), e.g. CARGO_BUILD_JOBS=1 on a shared box.
# The units and the configuration are generated first, into target/deb-assets/ (cargo deb
# alone, without this script, finds them missing):
#   - the units are tuning/systemd's, with /usr/local/bin/ringway (a manual install, as
#     tuning/README.md describes it) replaced by /usr/bin/ringway;
#   - ringway.toml is src/config/default.toml (what `ringway config default` prints, every key
#     documented) with a header for the package, [state] file written out, and the example
#     route commented out: a fresh install serves nothing but the admin API on 127.0.0.1
#     until a route is added.
set -euo pipefail
cd "$(dirname "$0")/.."

build=(--no-build)
case "${1:-}" in
  --no-build) ;;
  "") build=() ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

command -v cargo-deb >/dev/null 2>&1 || {
  echo "cargo-deb not found: cargo install cargo-deb --locked" >&2
  exit 1
}

assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/units"

for unit in ringway.service ringway@.service; do
  grep -q /usr/local/bin/ringway "tuning/systemd/$unit" || {
    echo "tuning/systemd/$unit does not run /usr/local/bin/ringway: update $0" >&2
    exit 1
  }
  sed 's#/usr/local/bin/ringway#/usr/bin/ringway#g' "tuning/systemd/$unit" >"$assets/units/$unit"
done

awk '
  # The header (up to the first blank line) is replaced.
  !body {
    if ($0 != "") next
    body = 1
    print "# ringway: configuration of ringway.service (Debian package ringway)."
    print "#"
    print "# Every key is documented below, with its default (the same text as `ringway config"
    print "# default`). There is no route yet: uncomment and edit the [[route]] example below,"
    print "# or add routes through the admin API (`sudo ringway route add`, README)."
    print "#   check:  sudo ringway check -c /etc/ringway/ringway.toml"
    print "#   apply:  sudo systemctl reload ringway   (ringway reload: all or nothing)"
    print "# This file may hold admin.token: keep it 0640 root:ringway (as installed). dpkg keeps"
    print "# your edits across upgrades (a conffile)."
    print "# Durations are strings with a unit (\"250ms\", \"30s\", \"5m\"); sizes are \"64KiB\", \"1MiB\"."
    print "# Unknown keys are errors."
    print ""
    next
  }
  # The state file where ringway.service (StateDirectory=ringway) and the CLI run as root
  # both look, written out so that they agree whoever runs the CLI.
  $0 == "# file = \"/var/lib/ringway/state.json\"" { print "file = \"/var/lib/ringway/state.json\""; next }
  /^\[\[route\]\]/ { routes = 1 }
  routes && $0 != "" && !/^#/ { print "# " $0; next }
  { print }
' src/config/default.toml >"$assets/ringway.toml"
grep -q '^file = "/var/lib/ringway/state.json"$' "$assets/ringway.toml" || {
  echo "src/config/default.toml: no '# file = \"/var/lib/ringway/state.json\"' line: update $0" >&2
  exit 1
}

# The Debian changelog (policy 12.7; lintian: no-changelog) records what the package was
# built from: the version, the git commit and its date (so a rebuild of one commit is the same).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  date=$(git log -1 --format=%aD HEAD)
  dirty=""
  git diff --quiet HEAD 2>/dev/null || dirty=" + local changes"
  built="Built by scripts/deb.sh from git commit $commit$dirty."
else
  date=$(date -R)
  built="Built by scripts/deb.sh (not a git checkout)."
fi
cat >"$assets/changelog" <<CHANGELOG
ringway ($version-1) unstable; urgency=medium

  * $built
  * What changed: the git history; README.md in /usr/share/doc/ringway.

 -- $maintainer  $date
CHANGELOG

out=$(cargo deb "${build[@]}" | tail -n 1)
[ -f "$out" ] || { echo "cargo deb did not print a package path (got: $out)" >&2; exit 1; }
echo "$out"
