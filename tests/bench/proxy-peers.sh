#!/usr/bin/env bash
# The proxy against its peers, one core each (see docs/benchmarks.md,
# "Proxy"). Run as root from the repository root:
#
#   bash tests/bench/proxy-peers.sh [ROUNDS] [SECONDS]
#
# A backend nginx (1 worker, `return 200 "hello world\n"`) on CPU 1 with wrk;
# every proxy on CPU 0, in front of it with upstream keep-alive:
#   nginx     nginx proxy_pass, 1 worker, keepalive 64
#   haproxy   HAProxy, nbthread 1, http-reuse always
#   caddy     Caddy reverse_proxy, GOMAXPROCS=1
#   httputil  a plain httputil.ReverseProxy, GOMAXPROCS=1
#   ipng      ipng-stats proxy, GOMAXPROCS=1, accounting on (fallback attribution),
#             net/http's serving loop (proxy.http1_loop net_http, the default)
#   ipng-own  the same with the proxy's own serving loop (proxy.http1_loop own)
# Rounds are interleaved; each arm: wrk -t1 -c32 -dSECONDS --latency, keep-alive
# and with `Connection: close`. Per arm: req/s, p50/p99, the proxy's CPU
# (utime+stime of its process) and system calls (perf, raw_syscalls:sys_enter
# of its pid) per request.
set -u
rounds=${1:-3}; secs=${2:-5}
for c in nginx haproxy caddy wrk perf go; do command -v $c >/dev/null || { echo "needs $c"; exit 1; }; done
tmp=$(mktemp -d); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for c in be px; do nginx -c "$tmp/$c.conf" -p "$tmp" -s stop 2>/dev/null; done
  sleep 0.3; rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/logs"
common='worker_processes 1; error_log stderr error; events { worker_connections 4096; }'
temps="client_body_temp_path $tmp/cb; proxy_temp_path $tmp/pt; fastcgi_temp_path $tmp/ft; uwsgi_temp_path $tmp/ut; scgi_temp_path $tmp/st;"
cat > "$tmp/be.conf" <<CONF
$common pid $tmp/be.pid;
http { access_log off; keepalive_requests 1000000; $temps
  server { listen 127.0.0.1:18091; location / { return 200 "hello world\n"; } } }
CONF
cat > "$tmp/px.conf" <<CONF
$common pid $tmp/px.pid;
http { access_log off; keepalive_requests 1000000; $temps
  upstream be { server 127.0.0.1:18091; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18090;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$tmp/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:18093
  default_backend be
backend be
  server s1 127.0.0.1:18091
CONF
cat > "$tmp/Caddyfile" <<CONF
{
  admin off
  auto_https off
}
http://127.0.0.1:18094 {
  reverse_proxy 127.0.0.1:18091
}
CONF
cat > "$tmp/proxy.yml" <<CONF
web: {listen_address: 127.0.0.1:19193}
attribution: {mode: fallback}
proxy:
  listeners: [{address: "127.0.0.1:18092", upstream: be}]
  upstreams: [{name: be, servers: ["127.0.0.1:18091"]}]
CONF
sed -e 's/18092/18096/' -e 's/19193/19196/' -e 's/^proxy:$/proxy:\n  http1_loop: own/' "$tmp/proxy.yml" > "$tmp/proxy-own.yml"
mkdir -p "$tmp/hu" && cat > "$tmp/hu/main.go" <<'GO'
package main

import (
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	u, _ := url.Parse("http://127.0.0.1:18091")
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024}
	panic(http.ListenAndServe("127.0.0.1:18095", rp))
}
GO
printf 'module hu\ngo 1.22\n' > "$tmp/hu/go.mod"
(cd "$tmp/hu" && go build -o "$tmp/httputil-proxy" .) || exit 1
go build -o "$tmp/ipng-stats" ./cmd/ipng-stats || exit 1

taskset -c 1 nginx -c "$tmp/be.conf" -p "$tmp"
taskset -c 0 nginx -c "$tmp/px.conf" -p "$tmp"
taskset -c 0 haproxy -f "$tmp/haproxy.cfg" -q & pids+=($!); hapid=$!
GOMAXPROCS=1 taskset -c 0 caddy run --adapter caddyfile --config "$tmp/Caddyfile" >/dev/null 2>&1 & pids+=($!); capid=$!
GOMAXPROCS=1 taskset -c 0 "$tmp/httputil-proxy" 2>/dev/null & pids+=($!); hupid=$!
GOMAXPROCS=1 taskset -c 0 "$tmp/ipng-stats" proxy --config "$tmp/proxy.yml" >/dev/null 2>&1 & pids+=($!); ippid=$!
GOMAXPROCS=1 taskset -c 0 "$tmp/ipng-stats" proxy --config "$tmp/proxy-own.yml" >/dev/null 2>&1 & pids+=($!); ownpid=$!
sleep 2
ngpid=$(pgrep -P "$(cat "$tmp/px.pid")" | head -1)
declare -A port=([nginx]=18090 [haproxy]=18093 [caddy]=18094 [httputil]=18095 [ipng]=18092 [ipng-own]=18096)
declare -A pid=([nginx]=$ngpid [haproxy]=$hapid [caddy]=$capid [httputil]=$hupid [ipng]=$ippid [ipng-own]=$ownpid)
arms=${ARMS:-nginx haproxy caddy httputil ipng ipng-own}
for a in "${!port[@]}"; do curl -sf "http://127.0.0.1:${port[$a]}/" >/dev/null || { echo "$a not answering"; exit 1; }; done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }   # clock ticks, all threads
tck=$(getconf CLK_TCK)
echo "load: $(uptime)"
echo "round arm mode req/s p50 p99 cpu_us/req syscalls/req"
for r in $(seq "$rounds"); do
  for mode in keepalive close; do
    hdr=(); [ $mode = close ] && hdr=(-H 'Connection: close')
    for a in $arms; do
      p=${pid[$a]}; c0=$(cpu "$p")
      perf stat -e raw_syscalls:sys_enter -p "$p" -x, -o "$tmp/perf" -- sleep "$((secs+1))" & perfpid=$!
      sleep 0.5
      out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" --latency "${hdr[@]}" "http://127.0.0.1:${port[$a]}/")
      wait $perfpid
      c1=$(cpu "$p")
      n=$(echo "$out" | awk '/requests in/ {print $1}')
      rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
      p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
      sc=$(awk -F, '/raw_syscalls/ {print $1}' "$tmp/perf")
      echo "$r $a $mode $rps $p50 $p99 $(awk -v c=$((c1-c0)) -v t="$tck" -v n="$n" 'BEGIN{printf "%.1f", c/t*1e6/n}') $(awk -v s="$sc" -v n="$n" 'BEGIN{printf "%.2f", s/n}')"
    done
  done
done
echo "load: $(uptime)"
