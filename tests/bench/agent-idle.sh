#!/usr/bin/env bash
# The agent's fixed cost: CPU per second of an idle agent (no traffic), on
# the embedded default and with the nginx ingest on, for each binary given,
# interleaved over ROUNDS rounds (see docs/benchmarks.md, "The agent's cost
# per connection"). Each agent runs alone in a cgroup2 group; its cpu.stat
# usage_usec is read over SECS seconds after a 2 s settle. Run as root:
#
#   bash tests/bench/agent-idle.sh SECS ROUNDS BINARY...
#
# IDLE_ENV="GODEBUG=updatemaxprocs=0" runs every agent with that
# environment.
set -u
secs=${1:?SECS}; rounds=${2:?ROUNDS}; shift 2
[ $# -gt 0 ] || { echo "give one or more ipng-stats binaries"; exit 1; }
cg2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
[ -n "$cg2" ] || { echo "needs a cgroup2 mount"; exit 1; }
cg=$cg2/ipng-idle-$$; mkdir "$cg" || exit 1
d=$(mktemp -d); mkdir "$d/spool"; mount -t tmpfs -o size=64m tmpfs "$d/spool" || exit 1
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  sleep 0.3; umount -l "$d/spool"; rm -rf "$d"; rmdir "$cg" 2>/dev/null
}
trap cleanup EXIT
echo "nginx: {enabled: true, log_file: $d/spool/access.log}" > "$d/ingest.yml"
usage() { awk '/^usage_usec/ {print $2}' "$cg/cpu.stat"; }
port=$((19400 + RANDOM % 300))
for r in $(seq "$rounds"); do
  for cfg in default ingest; do
    for bin in "$@"; do
      args=(agent --web.listen-address 127.0.0.1:$port --bpf.pin-dir /sys/fs/bpf/ipng-idle-$$)
      [ $cfg = ingest ] && args+=(--config "$d/ingest.yml")
      env ${IDLE_ENV:-} "$bin" "${args[@]}" > "$d/agent.log" 2>&1 & pid=$!
      echo "$pid" > "$cg/cgroup.procs"
      for _ in $(seq 300); do grep -q 'agent running' "$d/agent.log" && break; sleep 0.2; done
      grep -q 'agent running' "$d/agent.log" || { echo "agent did not start: $(tail -2 "$d/agent.log")"; exit 1; }
      sleep 2; u0=$(usage); sleep "$secs"; u1=$(usage)
      kill "$pid"; wait "$pid"; pid=""
      echo "round $r $cfg $bin: $(python3 -c "print(f'{($u1-$u0)/1e3/$secs:.3f}')") ms/s (load $(cut -d' ' -f1 /proc/loadavg))"
    done
  done
done
