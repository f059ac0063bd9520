#!/usr/bin/env bash
# The Debian package: builds it (scripts/deb.sh), then checks
#   - its contents (dpkg-deb --contents): the binary, both units, the sysctl profile, the
#     configuration (0640), and the conffiles and maintainer scripts (dpkg-deb -e);
#   - what it unpacks to (dpkg-deb -x): the units run /usr/bin/ringway and pass
#     `systemd-analyze verify`, the packaged binary accepts the packaged configuration
#     (`ringway check -c etc/ringway/ringway.toml`);
#   - as root, where mount namespaces and overlayfs are allowed: dpkg installs, upgrades,
#     removes and purges it for real in a throw-away chroot (an overlay of / on a tmpfs, in
#     its own mount and network namespaces; systemctl and deb-systemd-* are stubs that log,
#     so nothing on this host starts, stops or changes); otherwise that part is skipped, and
#     says so;
#   - lintian, where it is installed (scripts/test.sh installs it): no error (the tags that do
#     not apply are overridden, with the reason, in tuning/debian/lintian-overrides).
#
#   scripts/test-deb.sh              build the release binary first (cargo deb does)
#   scripts/test-deb.sh --no-build   package target/release/ringway as it is
#
# Installs cargo-deb (a pinned version, with --locked) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
start=$SECONDS
fail() { echo "FAIL: $*" >&2; exit 1; }

# Runs in its own mount and network namespaces (unshare): an overlay of / (its upper layer on a
# tmpfs, gone at exit) becomes a chroot in which dpkg really installs the package. systemctl,
# deb-systemd-invoke and deb-systemd-helper are stubs (in /usr/local/sbin, first on PATH) that
# log their arguments to /tmp/calls; /run/systemd/system exists so that postinst takes its
# systemd branch. No network: `ringway upgrade` finds no running ringway and fails, so the
# upgrade takes its fallback (a restart, logged by the stub). Exit 77: cannot set up.
chroot_test() {
  set -euo pipefail
  local s=$1 m=$1/merged
  mount --make-rprivate / 2>/dev/null || return 77
  mkdir -p "$s/ovl" "$m"
  mount -t tmpfs tmpfs "$s/ovl" 2>/dev/null || return 77
  mkdir "$s/ovl/upper" "$s/ovl/work"
  mount -t overlay overlay -o "lowerdir=/,upperdir=$s/ovl/upper,workdir=$s/ovl/work" "$m" 2>/dev/null ||
    return 77
  mount -t proc proc "$m/proc"
  mount --rbind /dev "$m/dev"
  mount -t tmpfs tmpfs "$m/run"
  mount -t tmpfs tmpfs "$m/tmp"
  mkdir -p "$m/run/systemd/system"
  cp "$s/ringway.deb" "$m/tmp/"
  for stub in systemctl deb-systemd-invoke deb-systemd-helper; do
    cat >"$m/usr/local/sbin/$stub" <<'STUB'
#!/bin/sh
echo "${0##*/} $*" >>/tmp/calls
case "${0##*/} $*" in
  "systemctl --quiet is-active "*) [ -e /tmp/active ] ;;
  "systemctl list-units "*) [ ! -e /tmp/active ] || echo "ringway@edge.service loaded active running ringway TCP proxy (edge)" ;;
esac
STUB
    chmod 755 "$m/usr/local/sbin/$stub"
  done
  in_root() {
    chroot "$m" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      DEBIAN_FRONTEND=noninteractive "$@"
  }
  calls() { cat "$m/tmp/calls"; }
  has() { grep -qxF "$1" "$m/tmp/calls" || fail "$2: no '$1' in the calls:"$'\n'"$(calls)"; }
  hasnt() { ! grep -q "$1" "$m/tmp/calls" || fail "$2: '$1' in the calls:"$'\n'"$(calls)"; }
  owner() {
    local got
    got=$(in_root stat -c "%U:%G %a" "$1")
    [ "$got" = "$2" ] || fail "$1 is $got, not $2"
  }

  echo "-- fresh install (dpkg -i)"
  : >"$m/tmp/calls"
  in_root dpkg -i /tmp/ringway.deb
  in_root getent passwd ringway | grep -q '^ringway:x:[0-9]*:[0-9]*:.*:/var/lib/ringway:/usr/sbin/nologin$' ||
    fail "no system user ringway: $(in_root getent passwd ringway)"
  in_root getent group ringway >/dev/null || fail "no group ringway"
  owner /etc/ringway "root:ringway 750"
  owner /etc/ringway/ringway.toml "root:ringway 640"
  owner /var/lib/ringway "ringway:ringway 750"
  has "deb-systemd-helper enable ringway.service" "fresh install"
  has "deb-systemd-invoke start ringway.service" "fresh install"
  has "deb-systemd-invoke restart systemd-sysctl.service" "fresh install"
  hasnt "restart ringway" "fresh install"
  in_root ringway check -c /etc/ringway/ringway.toml >/dev/null || fail "installed ringway check"

  echo "-- upgrade of a running ringway.service and ringway@edge (dpkg -i again)"
  echo "# edited by the admin" >>"$m/etc/ringway/ringway.toml"
  touch "$m/tmp/active"
  : >"$m/tmp/calls"
  in_root dpkg -i /tmp/ringway.deb 2>"$s/upgrade.err" || { cat "$s/upgrade.err"; fail "upgrade"; }
  cat "$s/upgrade.err" >&2
  grep -q "'ringway upgrade' failed for ringway.service; falling back to 'systemctl restart ringway.service'" \
    "$s/upgrade.err" || fail "upgrade: postinst did not try ringway upgrade first"
  has "deb-systemd-invoke restart ringway.service" "upgrade (fallback)"
  has "deb-systemd-invoke restart ringway@edge.service" "upgrade of the instance (fallback)"
  hasnt "stop" "upgrade"
  hasnt "invoke start ringway" "upgrade"
  grep -qx "# edited by the admin" "$m/etc/ringway/ringway.toml" || fail "upgrade lost the admin's edit"
  owner /etc/ringway/ringway.toml "root:ringway 640"

  echo "-- remove (dpkg -r), then purge (dpkg -P)"
  rm "$m/tmp/active"
  : >"$m/tmp/calls"
  in_root dpkg -r ringway
  has "deb-systemd-invoke stop ringway.service" "remove"
  [ -e "$m/etc/ringway/ringway.toml" ] || fail "remove deleted the configuration (a conffile)"
  [ ! -e "$m/usr/bin/ringway" ] || fail "remove left /usr/bin/ringway"
  in_root dpkg -P ringway
  [ ! -e "$m/etc/ringway/ringway.toml" ] || fail "purge left /etc/ringway/ringway.toml"
  [ ! -e "$m/var/lib/ringway" ] || fail "purge left /var/lib/ringway"
  in_root getent passwd ringway >/dev/null || fail "purge removed the ringway user (Debian keeps it)"
  echo "   install, upgrade, remove and purge behave"
}

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "== installing cargo-deb $CARGO_DEB_VERSION"
  t=$SECONDS
  # --debug: cargo-deb's own dev profile still optimizes its compressors (xz, zopfli), so
  # packaging takes seconds either way, and the install takes ~1.4 min instead of ~3.5 on
  # 2 cores (CI's budget).
  cargo install cargo-deb --locked --debug --version "$CARGO_DEB_VERSION"
  echo "   cargo-deb installed in $((SECONDS - t)) s"
fi

if [ "${1:-}" != --no-build ]; then
  # One release build for everything CI builds in release: the binary (packaged here, then
  # measured by scripts/perf-check) and the fuzz targets (scripts/fuzz.sh), built together
  # so their dependencies compile once and in parallel.
  echo "== cargo build --release --bin ringway --test fuzz"
  cargo build --release --bin ringway --test fuzz
fi
echo "== scripts/deb.sh --no-build"
deb=$(bash scripts/deb.sh --no-build)
echo "   $deb"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== dpkg-deb --contents"
dpkg-deb --contents "$deb" >"$scratch/contents"
# Each expected path with its mode, owned by root (dpkg-deb lists "0/0").
while read -r mode path; do
  grep -Eq "^$mode 0/0 .* \./$path\$" "$scratch/contents" ||
    fail "$deb: no $mode ./$path in:"$'\n'"$(cat "$scratch/contents")"
done <<'LIST'
-rwxr-xr-x usr/bin/ringway
-rw-r--r-- usr/lib/systemd/system/ringway.service
-rw-r--r-- usr/lib/systemd/system/ringway@.service
-rw-r--r-- usr/lib/sysctl.d/90-ringway.conf
-rw-r----- etc/ringway/ringway.toml
-rw-r--r-- etc/logrotate.d/ringway
-rw-r--r-- usr/share/lintian/overrides/ringway
-rw-r--r-- usr/share/doc/ringway/copyright
LIST

echo "== dpkg-deb -e: control, conffiles, maintainer scripts"
dpkg-deb -e "$deb" "$scratch/control"
ctl=$scratch/control
for f in postinst prerm postrm; do
  [ -x "$ctl/$f" ] || fail "no executable $f in the package"
  sh -n "$ctl/$f" || fail "$f: shell syntax"
done
grep -qx /etc/ringway/ringway.toml "$ctl/conffiles" || fail "ringway.toml is not a conffile"
grep -q '^Depends:.*libc6' "$ctl/control" || fail "Depends has no libc6 (\$auto)"
grep -q '^Depends:.*adduser' "$ctl/control" || fail "Depends has no adduser"
grep -q 'adduser --system --group --no-create-home --home /var/lib/ringway' "$ctl/postinst" ||
  fail "postinst does not create the ringway user"
# shellcheck disable=SC2016 # literal $config, as written in postinst
grep -q '/usr/bin/ringway upgrade -c "$config" --binary /usr/bin/ringway' "$ctl/postinst" ||
  fail "postinst does not run ringway upgrade"
grep -q 'deb-systemd-helper enable ringway.service' "$ctl/postinst" ||
  fail "postinst does not enable ringway.service"
# No restart of the service by the generated snippets: on upgrade, postinst's own code runs
# `ringway upgrade`; prerm stops it on remove only.
! grep -q '_dh_action' "$ctl/postinst" || fail "postinst has cargo-deb's restart-after-upgrade snippet"
# shellcheck disable=SC2016 # literal $1, as written in prerm
grep -q '\[ "$1" = remove \]' "$ctl/prerm" || fail "prerm does not stop on remove only"

echo "== dpkg-deb -x: units, configuration, binary"
root=$scratch/root
dpkg-deb -x "$deb" "$root"
for unit in ringway.service ringway@.service; do
  u=$root/usr/lib/systemd/system/$unit
  grep -q '^ExecStart=/usr/bin/ringway run -c /etc/ringway/' "$u" || fail "$unit: ExecStart is not /usr/bin/ringway run"
  ! grep -q /usr/local "$u" || fail "$unit: mentions /usr/local"
done
"$root/usr/bin/ringway" --version
"$root/usr/bin/ringway" check -c "$root/etc/ringway/ringway.toml" >"$scratch/check" ||
  fail "ringway check -c etc/ringway/ringway.toml: $(cat "$scratch/check")"
! grep -q '^\[\[route\]\]' "$root/etc/ringway/ringway.toml" || fail "the packaged configuration has a route"
grep -q '^file = "/var/lib/ringway/state.json"$' "$root/etc/ringway/ringway.toml" ||
  fail "the packaged configuration does not set [state] file"
# As tests/it/units.rs does for tuning/systemd: the packaged units pass systemd-analyze verify
# (the binary's path pointed at the unpacked one; the template as an instance).
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir "$scratch/verify"
  for pair in ringway.service:ringway.service ringway@.service:ringway@test.service; do
    src=${pair%%:*} name=${pair#*:}
    sed "s#/usr/bin/ringway#$root/usr/bin/ringway#g" "$root/usr/lib/systemd/system/$src" >"$scratch/verify/$name"
    out=$(systemd-analyze verify "$scratch/verify/$name" 2>&1) || fail "systemd-analyze verify $src: $out"
    ! grep -q "$name" <<<"$out" || fail "systemd-analyze verify $src complains: $out"
  done
  echo "   both units verify"
else
  echo "   systemd-analyze not installed: units not verified"
fi

echo "== dpkg in a throw-away chroot: install, upgrade, remove, purge"
if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null 2>&1 ||
  ! unshare --mount --net --fork true 2>/dev/null; then
  echo "   SKIPPED: needs root, unshare and mount and network namespaces (a container without"
  echo "   CAP_SYS_ADMIN has none): checked up to the unpacked files above"
else
  cp "$deb" "$scratch/ringway.deb"
  export -f chroot_test fail
  rc=0
  # shellcheck disable=SC2016 # $1 expands in the inner bash
  timeout 300 unshare --mount --net --fork bash -c 'chroot_test "$1"' _ "$scratch" || rc=$?
  case $rc in
    0) ;;
    77) echo "   SKIPPED: no mount namespace, tmpfs or overlayfs here" ;;
    *) fail "dpkg in the chroot (above)" ;;
  esac
fi

echo "== lintian"
if command -v lintian >/dev/null 2>&1; then
  # Errors fail; warnings and info are printed. Overrides: tuning/debian/lintian-overrides.
  timeout 300 lintian --fail-on error --info "$deb" || fail "lintian reports errors (above)"
  echo "   lintian: no errors"
else
  echo "   lintian not installed: skipped (apt-get install lintian)"
fi

echo "== package test passed in $((SECONDS - start)) s"
