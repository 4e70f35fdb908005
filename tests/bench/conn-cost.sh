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
# and one keep-alive arm pair (-c16, no Connection: close) off / default, and
# a pair through `ipng-stats proxy` (GOMAXPROCS=1, IP_PKTINFO, in front of the
# access_log-off nginx) without / with the agent.
# Per arm with an agent: agent CPU per connection (utime+stime over the wrk
# run) and the sock_ops program's run time per accepted connection from
# kernel.bpf_stats_enabled, with the agent (its real consumer) running.
# The spool is a tmpfs, as the snippet asks; the agent is built with
# CGO_ENABLED=0, as released (it drops its capabilities after start).
# CONNCOST_ARMS="off log-off ingest" runs only the arms named.
set -u
rounds=${1:-5}; old=${2:-}
command -v nginx >/dev/null && command -v wrk >/dev/null && command -v bpftool >/dev/null || { echo "needs nginx, wrk and bpftool"; exit 1; }
tmp=$(mktemp -d); apid=""; stats_was=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  [ -n "$apid" ] && kill -9 "$apid" 2>/dev/null
  [ -n "${ppid_:-}" ] && kill "$ppid_" 2>/dev/null
  for c in off log; do nginx -c "$tmp/$c.conf" -s stop 2>/dev/null; done
  [ -n "${pins:-}" ] && "$tmp/ipng-stats" detach --bpf.pin-dir "$pins" >/dev/null 2>&1
  [ -n "$old" ] && [ -n "${oldpins:-}" ] && "$old" detach --bpf.pin-dir "$oldpins" >/dev/null 2>&1
  sysctl -qw kernel.bpf_stats_enabled="$stats_was"
  sleep 0.3; umount -l "$tmp/spool" 2>/dev/null; rm -rf "$tmp"
}
trap cleanup EXIT
CGO_ENABLED=0 go build -o "$tmp/ipng-stats" ./cmd/ipng-stats || { echo "build failed"; exit 1; }
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

# run ARM BIN PINS CONFIG PORT WRK_ARGS...: prints "conn/s agent_us_per_conn sockops_ns_per_conn"
run() {
  local arm=$1 bin=$2 pin=$3 cfg=$4 p=$5; shift 5
  [ -n "${CONNCOST_ARMS:-}" ] && [[ " $CONNCOST_ARMS " != *" $arm "* ]] && return
  local t0 t1 prog r0 r1 c0 c1 out reqs rate
  if [ -n "$bin" ]; then
    local args=(agent --web.listen-address 127.0.0.1:$web --bpf.pin-dir "$pin")
    [ -n "$cfg" ] && args+=(--config "$cfg")
    "$bin" "${args[@]}" >"$tmp/agent.log" 2>&1 &
    apid=$!
    for _ in $(seq 600); do grep -q 'agent running' "$tmp/agent.log" && break; sleep 0.1; done
    grep -q 'agent running' "$tmp/agent.log" || { echo "agent did not start: $(tail -2 "$tmp/agent.log")" >&2; exit 1; }
    prog=$(bpftool -j link show pinned "$pin/sockops_link" | python3 -c 'import json,sys; print(json.load(sys.stdin)["prog_id"])')
    read -r r0 c0 < <(bpftool -j prog show id "$prog" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("run_time_ns",0), d.get("run_cnt",0))')
    t0=$(awk '{print $14+$15}' /proc/$apid/stat)
  fi
  out=$(wrk -t1 -c16 -d5s "$@" "http://127.0.0.1:$p/")
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  if [ -n "$bin" ]; then
    t1=$(awk '{print $14+$15}' /proc/$apid/stat)
    read -r r1 c1 < <(bpftool -j prog show id "$prog" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("run_time_ns",0), d.get("run_cnt",0))')
    kill $apid; for _ in $(seq 100); do kill -0 $apid 2>/dev/null || break; sleep 0.1; done
    kill -9 $apid 2>/dev/null; wait $apid 2>/dev/null; apid=""
    python3 -c "print(f'$arm {$rate:.0f} {($t1-$t0)*1e4/$reqs:.2f} {($r1-$r0)/$reqs:.0f} {($c1-$c0)/$reqs:.1f} {($r1-$r0)/max(1,$c1-$c0):.0f}')"
  else
    echo "$arm $rate - -"
  fi
}

echo "arm conn/s agent-us/conn sockops-ns/conn calls/conn ns/call"
for r in $(seq "$rounds"); do
  echo "# round $r  (load average $(cut -d' ' -f1-3 /proc/loadavg))"
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
  run proxy-off "" "" "" $pport -H 'Connection: close'
  run proxy-default "$tmp/ipng-stats" "$pins" "" $pport -H 'Connection: close'

done
