#!/usr/bin/env bash
# Checks this host against ringway's tuning kit (tuning/README.md) and prints one line per
# check: PASS / WARN / INFO, the knob, its current and recommended value, and a fix or note.
# Strictly read-only: it reads /proc and /sys, probes io_uring by creating and closing one
# ring, and changes nothing. Runs as any user. Exit 0 (warnings included); 2 on bad usage.
set -u

here=$(cd "$(dirname "$0")" && pwd)
profile="$(dirname "$here")/tuning/sysctl/90-ringway.conf"

# Not sysctls, so not in the profile: the unit's LimitNOFILE and the warning threshold.
NOFILE_UNIT=1048576
NOFILE_MIN=65536

usage() {
  cat <<EOF
usage: $(basename "$0") [--profile FILE]

Read-only check of this host for ringway: sysctls against the profile, fd and memlock limits,
kernel version and io_uring availability, CPUs and IRQ handling, a running ringway's limits.

  --profile FILE  sysctl profile holding the recommended values
                  (default: tuning/sysctl/90-ringway.conf of this repository)
  -h, --help      this text
EOF
}

while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --profile)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    *) echo "check-host.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ ! -r "$profile" ]; then
  echo "check-host.sh: cannot read profile $profile" >&2
  exit 2
fi

npass=0 nwarn=0 ninfo=0
# report STATUS KNOB CURRENT RECOMMENDED [FIX-OR-NOTE]
report() {
  case $1 in
    PASS) npass=$((npass + 1)) ;;
    WARN) nwarn=$((nwarn + 1)) ;;
    *) ninfo=$((ninfo + 1)) ;;
  esac
  printf '%-4s  %-30s  now: %-24s  want: %-24s  %s\n' "$1" "$2" "$3" "$4" "${5:-}"
}

# Squeezes runs of blanks into one space and trims the ends.
squeeze() { tr -s '[:blank:]' ' ' | sed 's/^ //; s/ $//'; }

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# "unlimited" as a number larger than any limit we compare with.
limit_num() { if [ "$1" = unlimited ]; then echo 9223372036854775807; else echo "$1"; fi; }

# Kernel version as major*1000+minor (6.1 -> 6001).
release=$(uname -r)
kmajor=${release%%.*}
kminor=${release#*.}
kminor=${kminor%%[!0-9]*}
is_uint "$kmajor" || kmajor=0
is_uint "$kminor" || kminor=0
kver=$((kmajor * 1000 + kminor))

# ---- sysctls: every key of the profile ---------------------------------------------------

check_sysctl() { # KEY RECOMMENDED OPTIONAL(yes|no)
  local key=$1 want=$2 optional=$3 file cur status fix
  file=/proc/sys/${key//.//}
  case $want in
    *' '*) fix="fix: sudo sysctl -w $key='$want'" ;;
    *) fix="fix: sudo sysctl -w $key=$want" ;;
  esac
  if [ ! -e "$file" ]; then
    if [ "$optional" = yes ]; then
      case $key in
        net.ipv4.tcp_migrate_req) report INFO "$key" "absent" "$want" "needs Linux 5.14+" ;;
        *) report INFO "$key" "absent" "$want" "not on this kernel (optional in the profile)" ;;
      esac
    else
      report WARN "$key" "absent" "$want" "not on this kernel"
    fi
    return
  fi
  if ! cur=$(squeeze 2>/dev/null <"$file"); then
    report INFO "$key" "unreadable" "$want" "not readable as $(id -un)"
    return
  fi

  local -a c w
  read -r -a c <<<"$cur"
  read -r -a w <<<"$want"
  status=PASS
  if [ "$key" = net.ipv4.ip_local_port_range ]; then
    # The width of the range is what bounds concurrent backend connections.
    local cw=0 ww=0
    if is_uint "${c[0]:-}" && is_uint "${c[1]:-}" && is_uint "${w[0]:-}" && is_uint "${w[1]:-}"; then
      cw=$((c[1] - c[0] + 1))
      ww=$((w[1] - w[0] + 1))
    fi
    [ "$cw" -ge "$ww" ] || status=WARN
    cur="$cur ($cw ports)"
    want="$want ($ww ports)"
  elif [ "$cur" = 0 ] && { [ "$key" = fs.pipe-user-pages-soft ] || [ "$key" = fs.pipe-user-pages-hard ]; }; then
    cur="0 (no limit)"
  else
    # Field by field, numerically: each of the host's values at least the profile's.
    local i
    for i in ${w[@]+"${!w[@]}"}; do
      if is_uint "${w[i]}" && is_uint "${c[i]:-}"; then
        [ "${c[i]}" -ge "${w[i]}" ] || status=WARN
      elif [ "${w[i]}" != "${c[i]:-}" ]; then
        status=WARN
      fi
    done
  fi
  if [ "$status" = PASS ]; then fix=""; fi
  report "$status" "$key" "$cur" "$want" "$fix"
}

nkeys=0
while IFS= read -r line || [ -n "$line" ]; do
  line=$(printf '%s' "$line" | squeeze)
  case $line in '' | '#'* | ';'*) continue ;; esac
  optional=no
  case $line in -*) optional=yes; line=${line#-} ;; esac
  case $line in
    *=*) ;;
    *) report WARN "profile" "$line" "key = value" "line not understood in $profile"; continue ;;
  esac
  key=$(printf '%s' "${line%%=*}" | squeeze)
  val=$(printf '%s' "${line#*=}" | squeeze)
  check_sysctl "$key" "$val" "$optional"
  nkeys=$((nkeys + 1))
done <"$profile"
[ "$nkeys" -gt 0 ] || report WARN "profile" "no keys" "-" "$profile holds no sysctl"

# ---- limits of this shell ---------------------------------------------------------------

check_nofile() { # LABEL VALUE FIX
  if [ "$(limit_num "$2")" -ge "$NOFILE_MIN" ]; then
    report PASS "$1" "$2" ">= $NOFILE_MIN"
  else
    report WARN "$1" "$2" ">= $NOFILE_MIN" "$3"
  fi
}
check_nofile "nofile soft (this shell)" "$(ulimit -Sn)" \
  "fix: ulimit -n $NOFILE_UNIT (up to the hard limit); the units set LimitNOFILE=$NOFILE_UNIT"
check_nofile "nofile hard (this shell)" "$(ulimit -Hn)" \
  "fix: raise in /etc/security/limits.conf; the units set LimitNOFILE=$NOFILE_UNIT"

nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo "")
if is_uint "$nr_open"; then
  if [ "$nr_open" -ge "$NOFILE_UNIT" ]; then
    report PASS "fs.nr_open" "$nr_open" ">= $NOFILE_UNIT" "ceiling for LimitNOFILE"
  else
    report WARN "fs.nr_open" "$nr_open" ">= $NOFILE_UNIT" \
      "fix: sudo sysctl -w fs.nr_open=$NOFILE_UNIT (LimitNOFILE=$NOFILE_UNIT fails above it)"
  fi
fi

ncpu=$(nproc 2>/dev/null || echo 1)
memlock=$(ulimit -Sl) # KiB
if [ "$kver" -ge 5012 ]; then
  report INFO "memlock (this shell)" "$memlock KiB" "-" \
    "Linux 5.12+ charges io_uring to the memory cgroup, not memlock"
else
  need=$((ncpu * 1024))
  if [ "$(limit_num "$memlock")" -ge "$need" ]; then
    report PASS "memlock (this shell)" "$memlock KiB" ">= $need KiB" "1 MiB per worker (kernel < 5.12)"
  else
    report WARN "memlock (this shell)" "$memlock KiB" ">= $need KiB" \
      "fix: ulimit -l unlimited / LimitMEMLOCK=infinity (kernel < 5.12 charges io_uring rings to it)"
  fi
fi

# ---- kernel and io_uring -----------------------------------------------------------------

if [ "$kver" -ge 6001 ]; then
  report PASS "kernel" "$release" ">= 6.1" "io_uring mode: deferred (DEFER_TASKRUN + SINGLE_ISSUER)"
elif [ "$kver" -ge 5019 ]; then
  report INFO "kernel" "$release" ">= 6.1" "io_uring mode: cooperative (COOP_TASKRUN); 6.1+ defers task work"
elif [ "$kver" -ge 5006 ]; then
  report WARN "kernel" "$release" ">= 6.1" \
    "io_uring mode: plain (task work interrupts workers under load); upgrade to 6.1+"
else
  report WARN "kernel" "$release" ">= 5.6" "io_uring too old: upgrade, or runtime.driver = \"epoll\""
fi

uring_fix='fix: allow io_uring (sysctl kernel.io_uring_disabled=0; seccomp allowing io_uring_setup/enter/register) or runtime.driver = "epoll"'
disabled_file=/proc/sys/kernel/io_uring_disabled
if [ ! -e "$disabled_file" ]; then
  report INFO "kernel.io_uring_disabled" "absent" "0" "no such switch before Linux 6.6"
else
  disabled=$(cat "$disabled_file" 2>/dev/null || echo "?")
  case $disabled in
    0) report PASS "kernel.io_uring_disabled" "0" "0" ;;
    1)
      group=$(cat /proc/sys/kernel/io_uring_group 2>/dev/null || echo "?")
      report WARN "kernel.io_uring_disabled" "1" "0" \
        "only gid $group (kernel.io_uring_group) or CAP_SYS_ADMIN: add the ringway user to that group, or $uring_fix"
      ;;
    *) report WARN "kernel.io_uring_disabled" "$disabled" "0" "$uring_fix" ;;
  esac
fi

# io_uring_setup(2048 entries) with ringway's flag sets, best first, as a worker does.
# 425 is io_uring_setup on every architecture but alpha; the params struct is 120 bytes with
# flags at offset 8. EINVAL means the kernel does not know the flags: try the next set.
probe_py='
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
err = 0
for name, flags in (("deferred", 1 << 12 | 1 << 13), ("cooperative", 1 << 8 | 1 << 9), ("plain", 0)):
    params = ctypes.create_string_buffer(120)
    ctypes.c_uint32.from_buffer(params, 8).value = flags
    fd = libc.syscall(425, ctypes.c_uint(2048), params)
    if fd >= 0:
        os.close(fd)
        print("ok", name)
        raise SystemExit
    err = ctypes.get_errno()
    if err != errno.EINVAL:
        break
print("refused", errno.errorcode.get(err, str(err)))
'
if ! command -v python3 >/dev/null 2>&1; then
  report INFO "io_uring probe" "skipped" "ring created" "python3 not found"
else
  probe=$(python3 -c "$probe_py" 2>&1 | tail -n 1)
  seccomp=$(awk '/^Seccomp:/ {print $2}' /proc/self/status 2>/dev/null)
  case $probe in
    "ok "*) report PASS "io_uring probe" "ring created (${probe#ok })" "ring created" \
      "in this shell's context; the units allow io_uring in their SystemCallFilter" ;;
    "refused EPERM")
      why="blocked by kernel.io_uring_disabled or a seccomp filter"
      [ "${seccomp:-0}" = 2 ] && why="$why (this shell runs under seccomp)"
      report WARN "io_uring probe" "EPERM" "ring created" "$why; $uring_fix" ;;
    "refused ENOSYS")
      report WARN "io_uring probe" "ENOSYS" "ring created" \
        "no io_uring in this kernel (CONFIG_IO_URING) or a seccomp filter; $uring_fix" ;;
    "refused ENOMEM")
      report WARN "io_uring probe" "ENOMEM" "ring created" \
        "memlock too low (kernel < 5.12): ulimit -l unlimited / LimitMEMLOCK=infinity" ;;
    *) report WARN "io_uring probe" "${probe:-no output}" "ring created" "$uring_fix" ;;
  esac
fi

# ---- CPUs, isolation, interrupts -----------------------------------------------------------

allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status 2>/dev/null)
report INFO "cpus (this shell)" "$ncpu allowed ($allowed) of $(nproc --all 2>/dev/null || echo '?')" "-" \
  "runtime.workers = 0 runs one worker per allowed core; restrict with CPUAffinity="

cpuset=""
while IFS=: read -r _ controllers path; do
  if [ -z "$controllers" ]; then
    f=/sys/fs/cgroup$path/cpuset.cpus.effective # cgroup v2
  else
    case ",$controllers," in *,cpuset,*) ;; *) continue ;; esac
    f=/sys/fs/cgroup/cpuset$path/cpuset.effective_cpus # cgroup v1
  fi
  if [ -r "$f" ]; then
    cpuset=$(cat "$f")
    break
  fi
done </proc/self/cgroup
report INFO "cgroup cpuset" "${cpuset:-not readable}" "-" "AllowedCPUs= in the unit sets it (cgroup v2)"

cmdline=""
words=()
read -r -a words 2>/dev/null </proc/cmdline
for word in ${words[@]+"${words[@]}"}; do
  case $word in isolcpus=* | nohz_full=* | rcu_nocbs=* | irqaffinity=*) cmdline="$cmdline $word" ;; esac
done
cmdline=${cmdline# }
isolated=$(cat /sys/devices/system/cpu/isolated 2>/dev/null)
if [ -n "$cmdline" ]; then
  report INFO "isolation (/proc/cmdline)" "$cmdline" "-" \
    "isolated: ${isolated:-none}; isolated cores are outside the default affinity: give them to ringway with CPUAffinity="
else
  report INFO "isolation (/proc/cmdline)" "none" "-" "optional: isolcpus/nohz_full/rcu_nocbs, see tuning/README.md"
fi

if pgrep -x irqbalance >/dev/null 2>&1; then
  report INFO "irqbalance" "running" "-" \
    "keep NIC IRQs off worker cores: IRQBALANCE_BANNED_CPULIST=<worker cores>"
else
  report INFO "irqbalance" "not running" "-" \
    "IRQs stay where /proc/irq/*/smp_affinity_list puts them"
fi

# ---- a running ringway ---------------------------------------------------------------------

pids=$(pgrep -x ringway 2>/dev/null || true)
if [ -z "$pids" ]; then
  report INFO "ringway process" "none running" "-" "its limits are checked when one runs"
fi
for pid in $pids; do
  limits=/proc/$pid/limits
  if [ ! -r "$limits" ]; then
    report INFO "ringway pid $pid" "limits unreadable" "-" "run as its user or root"
    continue
  fi
  nofile=$(awk '/^Max open files/ {print $4}' "$limits")
  if [ "$(limit_num "${nofile:-0}")" -ge "$NOFILE_MIN" ]; then
    report PASS "ringway pid $pid nofile" "$nofile" ">= $NOFILE_MIN"
  else
    report WARN "ringway pid $pid nofile" "${nofile:-?}" ">= $NOFILE_MIN" "fix: LimitNOFILE=$NOFILE_UNIT, then restart"
  fi
  locked=$(awk '/^Max locked memory/ {print $4}' "$limits")
  if [ "$kver" -ge 5012 ]; then
    report INFO "ringway pid $pid memlock" "${locked:-?} bytes" "-" "not used for io_uring on 5.12+"
  elif [ "$(limit_num "${locked:-0}")" -ge $((ncpu * 1048576)) ]; then
    report PASS "ringway pid $pid memlock" "$locked bytes" ">= $((ncpu * 1048576)) bytes"
  else
    report WARN "ringway pid $pid memlock" "${locked:-?} bytes" ">= $((ncpu * 1048576)) bytes" \
      "fix: LimitMEMLOCK=infinity, then restart"
  fi
  report INFO "ringway pid $pid cpus" "$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" "-" \
    "one worker per core of this set (runtime.workers = 0)"
done

echo "summary: $npass PASS, $nwarn WARN, $ninfo INFO (profile: $profile)"
if [ "$nwarn" -gt 0 ]; then
  echo "persist the sysctls: sudo cp $profile /etc/sysctl.d/ && sudo sysctl --system (see tuning/README.md)"
fi
exit 0
