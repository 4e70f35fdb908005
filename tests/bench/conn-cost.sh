#!/usr/bin/env bash
# What the agent costs nginx per new connection, in interleaved rounds (see
# docs/benchmarks.md, "The agent's cost per connection"). Run as root from the
# repository root:
#
#   bash tests/bench/conn-cost.sh [ROUNDS] [OLD_BINARY]
#
# Two nginx instances (1 worker, `return 200`): one with `access_log off`, one
# writing the shipped JSON log to a spool. Arms, interleaved in every round:
#   off        access_log off, no agent
#   default    access_log off, `ipng-stats agent` on the embedded default
#   old        same with OLD_BINARY (when given): the version before
#   log-off    JSON log written, no agent (nobody reads it; truncated per round)
#   ingest     JSON log, agent with nginx.enabled consuming it
# wrk -t1 -c16 -d5s -H 'Connection: close' (every request a new connection),
# keep-alive arm pairs (-c16, no Connection: close) off / default and
# log-off / ingest, and a pair through `ipng-stats proxy` (GOMAXPROCS=1,
# IP_PKTINFO, in front of the access_log-off nginx) without / with the agent.
# Per arm with an agent: agent CPU per connection (the agent alone in a
# cgroup2 group, its cpu.stat usage_usec over the wrk run: every thread, µs
# resolution) and the sock_ops program's run time per accepted connection
# from kernel.bpf_stats_enabled, with the agent (its real consumer) running:
# every sock_ops program the agent attached to the cgroup2 root, summed.
# The default and ingest arms (and old ones) first measure the started agent idle (no
# traffic) for CONNCOST_IDLE seconds (default 10): its fixed cost, in ms of
# CPU per second. A summary of per-round ratios and medians ends the output.
# The spool is a tmpfs, as the snippet asks; the agent is built with
# CGO_ENABLED=0, as released (it drops its capabilities after start).
# CONNCOST_ARMS="off log-off ingest" runs only the arms named; CONNCOST_BIN
# uses that binary instead of building the current tree.
set -u
rounds=${1:-5}; old=${2:-}
command -v nginx >/dev/null && command -v wrk >/dev/null && command -v bpftool >/dev/null || { echo "needs nginx, wrk and bpftool"; exit 1; }
tmp=$(mktemp -d); apid=""; stats_was=$(sysctl -n kernel.bpf_stats_enabled)
cg=""
cleanup() {
  [ -n "$apid" ] && kill -9 "$apid" 2>/dev/null
  [ -n "${ppid_:-}" ] && kill "$ppid_" 2>/dev/null
  for c in off log; do nginx -c "$tmp/$c.conf" -s stop 2>/dev/null; done
  [ -n "${pins:-}" ] && "$tmp/ipng-stats" detach --bpf.pin-dir "$pins" >/dev/null 2>&1
  [ -n "$old" ] && [ -n "${oldpins:-}" ] && "$old" detach --bpf.pin-dir "$oldpins" >/dev/null 2>&1
  sysctl -qw kernel.bpf_stats_enabled="$stats_was"
  sleep 0.3; umount -l "$tmp/spool" 2>/dev/null
  [ -n "$cg" ] && rmdir "$cg" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -n "${CONNCOST_BIN:-}" ]; then
  cp "$CONNCOST_BIN" "$tmp/ipng-stats" || exit 1
else
  CGO_ENABLED=0 go build -o "$tmp/ipng-stats" ./cmd/ipng-stats || { echo "build failed"; exit 1; }
fi
# The agent runs alone in a cgroup2 group: cpu.stat counts every thread's
# CPU time in µs (utime+stime from /proc count 10 ms ticks).
cg2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
[ -n "$cg2" ] || { echo "needs a cgroup2 mount"; exit 1; }
cg=$cg2/ipng-conncost-$$; mkdir "$cg" || exit 1
usage() { awk '/^usage_usec/ {print $2}' "$cg/cpu.stat"; }
bpffs=/sys/fs/bpf; mountpoint -q $bpffs || mount -t bpf bpf $bpffs
pins=$bpffs/ipng-conncost-$$; oldpins=$bpffs/ipng-conncost-old-$$
port=$((18600 + RANDOM % 300)); lport=$((port + 1)); web=$((port + 1000))
mkdir -p "$tmp/spool" && mount -t tmpfs -o size=256m tmpfs "$tmp/spool" || { echo "mounting the spool tmpfs failed"; exit 1; }
cat > "$tmp/ingest.yml" <<YML
nginx: {enabled: true, log_file: $tmp/spool/access.log}
YML
"$tmp/ipng-stats" nginx-snippet --config "$tmp/ingest.yml" > "$tmp/snippet.conf" || { echo "nginx-snippet failed"; exit 1; }
for c in off log; do
  p=$port; logline="access_log off;"
  [ $c = log ] && { p=$lport; logline="include $tmp/snippet.conf;"; }
  cat > "$tmp/$c.conf" <<CONF
worker_processes 1; pid $tmp/$c.pid; error_log $tmp/$c.err;
events { worker_connections 4096; }
http { $logline server { listen 127.0.0.1:$p; location / { return 200 "ok\n"; } } }
CONF
  nginx -c "$tmp/$c.conf" || { echo "nginx ($c) failed"; cat "$tmp/$c.err"; exit 1; }
done
pport=$((port + 2))
cat > "$tmp/proxy.yml" <<YML
web: {listen_address: 127.0.0.1:$((web + 1))}
attribution: {mode: fallback}
proxy:
  listeners: [{address: "127.0.0.1:$pport", upstream: be}]
  upstreams: [{name: be, servers: ["127.0.0.1:$port"]}]
YML
GOMAXPROCS=1 "$tmp/ipng-stats" proxy --config "$tmp/proxy.yml" >"$tmp/proxy.log" 2>&1 &
ppid_=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$pport/" && break; sleep 0.1; done
sysctl -qw kernel.bpf_stats_enabled=1
sleep 0.3

idle=${CONNCOST_IDLE:-10}
out=$tmp/results

# root_progs prints the ids of the sock_ops programs attached to the cgroup2
# root; agent_progs IDS those attached since IDS was read (waiting a moment
# for the first); prog_stats IDS the sum of their run time and run count.
root_progs() {
  bpftool -j cgroup show "$cg2" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read().strip() or "[]")
if isinstance(d, dict):
    sys.exit(d.get("error", "bpftool cgroup show failed"))
print(" ".join(str(p["id"]) for p in d if p.get("attach_type") in ("sock_ops", "cgroup_sock_ops")))'
}
agent_progs() {
  local now
  for _ in $(seq 50); do
    now=$(python3 -c 'import sys; a=set(sys.argv[1].split()); print(" ".join(i for i in sys.argv[2].split() if i not in a))' "$1" "$(root_progs)")
    [ -n "$now" ] && break; sleep 0.1
  done
  [ -n "$now" ] || { echo "the agent attached no sock_ops program to $cg2" >&2; exit 1; }
  echo "$now"
}
prog_stats() {
  local r=0 c=0 id
  for id in $1; do
    read -r a b < <(bpftool -j prog show id "$id" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("run_time_ns",0), d.get("run_cnt",0))')
    r=$((r + a)); c=$((c + b))
  done
  echo "$r $c"
}

# run ARM BIN PINS CONFIG PORT WRK_ARGS...: prints "ARM conn/s agent_us_per_conn
# idle_ms_per_s sockops_ns_per_conn calls_per_conn ns_per_call", "-" where
# the arm has no agent.
run() {
  local arm=$1 bin=$2 pin=$3 cfg=$4 p=$5; shift 5
  [ -n "${CONNCOST_ARMS:-}" ] && [[ " $CONNCOST_ARMS " != *" $arm "* ]] && return
  local prog r0 r1 c0 c1 u0 u1 i0 i1 res reqs rate idlems=-
  if [ -n "$bin" ]; then
    local ids0; ids0=$(root_progs)
    local args=(agent --web.listen-address 127.0.0.1:$web --bpf.pin-dir "$pin")
    [ -n "$cfg" ] && args+=(--config "$cfg")
    "$bin" "${args[@]}" >"$tmp/agent.log" 2>&1 &
    apid=$!
    echo "$apid" > "$cg/cgroup.procs"
    for _ in $(seq 600); do grep -q 'agent running' "$tmp/agent.log" && break; sleep 0.1; done
    grep -q 'agent running' "$tmp/agent.log" || { echo "agent did not start: $(tail -2 "$tmp/agent.log")" >&2; exit 1; }
    # Every sock_ops program the agent attached to the cgroup2 root (the
    # stamping program and, with handshakes.enabled, the SYN-ACK program
    # when it is attached): nginx's connections pay for all of them.
    prog=$(agent_progs "$ids0")
    if [[ " default ingest old old-ingest " == *" $arm "* ]]; then
      sleep 1 # past the start's own work
      i0=$(usage); sleep "$idle"; i1=$(usage)
      idlems=$(python3 -c "print(f'{($i1-$i0)/1e3/$idle:.2f}')")
    fi
    read -r r0 c0 < <(prog_stats "$prog")
    u0=$(usage)
  fi
  res=$(wrk -t1 -c16 -d5s "$@" "http://127.0.0.1:$p/")
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$res")
  reqs=$(awk '/requests in/{print $1}' <<<"$res")
  if [ -n "$bin" ]; then
    u1=$(usage)
    read -r r1 c1 < <(prog_stats "$prog")
    kill $apid; for _ in $(seq 100); do kill -0 $apid 2>/dev/null || break; sleep 0.1; done
    kill -9 $apid 2>/dev/null; wait $apid 2>/dev/null; apid=""
    res=$(python3 -c "print(f'$arm {$rate:.0f} {($u1-$u0)/$reqs:.3f} $idlems {($r1-$r0)/$reqs:.0f} {($c1-$c0)/$reqs:.1f} {($r1-$r0)/max(1,$c1-$c0):.0f}')")
  else
    res="$arm $rate - - - - -"
  fi
  echo "$res" | tee -a "$out"
}

echo "arm conn/s agent-us/conn idle-ms/s sockops-ns/conn calls/conn ns/call"
for r in $(seq "$rounds"); do
  echo "# round $r  (load average $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$out"
  run off "" "" "" $port -H 'Connection: close'
  run default "$tmp/ipng-stats" "$pins" "" $port -H 'Connection: close'
  [ -n "$old" ] && run old "$old" "$oldpins" "" $port -H 'Connection: close'
  : > "$tmp/spool/access.log"
  run log-off "" "" "" $lport -H 'Connection: close'
  : > "$tmp/spool/access.log"
  run ingest "$tmp/ipng-stats" "$pins" "$tmp/ingest.yml" $lport -H 'Connection: close'
  [ -n "$old" ] && { : > "$tmp/spool/access.log"; run old-ingest "$old" "$oldpins" "$tmp/ingest.yml" $lport -H 'Connection: close'; }
  run ka-off "" "" "" $port
  run ka-default "$tmp/ipng-stats" "$pins" "" $port
  : > "$tmp/spool/access.log"
  run ka-log-off "" "" "" $lport
  : > "$tmp/spool/access.log"
  run ka-ingest "$tmp/ipng-stats" "$pins" "$tmp/ingest.yml" $lport
  run proxy-off "" "" "" $pport -H 'Connection: close'
  run proxy-default "$tmp/ipng-stats" "$pins" "" $pport -H 'Connection: close'
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

# Per round, each arm's rate over its peer's in the same round; medians.
python3 - "$out" <<'PY'
import statistics, sys
pairs = [("default", "off"), ("old", "off"), ("ingest", "log-off"), ("old-ingest", "log-off"),
         ("log-off", "off"), ("ka-default", "ka-off"), ("ka-ingest", "ka-log-off"), ("proxy-default", "proxy-off")]
rounds, cur = [], None
for line in open(sys.argv[1]):
    f = line.split()
    if line.startswith("#"):
        cur = {}; rounds.append(cur)
    elif cur is not None and len(f) >= 2:
        cur[f[0]] = f
print("ratio per round ... median; agent µs/conn and idle ms/s medians")
for arm, peer in pairs:
    rs = [float(r[arm][1]) / float(r[peer][1]) for r in rounds if arm in r and peer in r]
    if not rs:
        continue
    line = f"{arm}/{peer}: " + " ".join(f"{x:.3f}" for x in rs) + f"  median {statistics.median(rs):.3f}"
    us = [float(r[arm][2]) for r in rounds if arm in r and r[arm][2] != "-"]
    idle = [float(r[arm][3]) for r in rounds if arm in r and r[arm][3] != "-"]
    if us:
        line += f"; agent {statistics.median(us):.3f} µs/conn"
    if idle:
        line += f", idle {statistics.median(idle):.2f} ms/s"
    print(line)
PY
