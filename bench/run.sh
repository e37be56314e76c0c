#!/usr/bin/env bash
# Rampart HTTP benchmarks: nginx, HAProxy and the Rampart gateway over the same three backend
# replicas, with direct traffic to one replica as the yardstick, interleaved over N rounds.
#
# usage: bench/run.sh [--quick] [--rounds N] [--duration SECS] [--micro] [--micro-only]
#                     [--targets "direct nginx haproxy rampart [lean]"] [--scenarios "steady kill-one kill-all all-down"]
#                     [--idle-connections N] [--slow-connections N] [--hold SECS]
#                     [--out FILE] [--keep]
#
#   --quick        3 s runs, 1 round (a smoke test of the whole pipeline; not for figures)
#   --rounds N     interleaved rounds (default 3); the report gives medians across rounds
#   --duration S   seconds per wrk run (default 10)
#   --micro        also run the crates' criterion micro-benchmarks (short measurement times)
#   --micro-only   only the micro-benchmarks
#   --out FILE     the report to update (default BENCHMARKS.md at the repository root); only the
#                  generated sections between the bench:* markers are replaced
#   --keep         keep the temporary directory (configs, logs, raw wrk output)
#   --targets      which to measure; `lean` is the gateway without Rampart middleware
#                  (`gateway --stack lean`), to see what the middleware costs
#   --idle-connections N   connections of idle-conns (default 10000)
#   --slow-connections N   connections of slow-clients (default 2000)
#   --hold SECS    how long idle-conns and slow-clients hold their connections (default 80 and
#                  70: past nginx's 75 s keep-alive and 60 s header timeouts, to see who closes)
#
# Scenarios (each run starts fresh replicas and a fresh proxy, and stops them by PID):
#   steady    wrk -t1 -c32 -dD --latency against each target
#   kill-one  the same, with one replica SIGKILLed at D/2 (failover cost: non-2xx, socket errors)
#   kill-all  the same, with all three replicas SIGKILLed at D/2 (stalls, timeouts, errors;
#             a wrk Lua script counts the status codes)
#   all-down  all replicas killed, 3 s for the health checks to notice, then wrk (the apology:
#             throughput, latency; the status and Retry-After of one probe request)
# Opt-in scenarios (name them in --scenarios; not for direct or lean; the file limit is raised
# to 20,000 when the hard limit allows):
#   idle-conns    N idle keep-alive connections (one request each, then nothing) held for
#                 --hold s: the proxy's RSS before, while held and after (KiB per connection,
#                 memory given back), a normal request's latency while they are held (20 curl
#                 requests), and when the proxy closed them
#   slow-clients  N clients that send half a request head and stall: the same figures, and
#                 how many were answered 408
#   reload        wrk for D s with a configuration reload at D/2 (nginx: SIGHUP to the master;
#                 HAProxy in master-worker mode: SIGUSR2; rampart-gateway: SIGHUP): non-2xx and
#                 socket errors (the target: zero)
#
# Installs nginx, HAProxy, wrk and curl from Debian's packages when missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

ROUNDS=3
DURATION=10
MICRO=0
MACRO=1
KEEP=0
OUT="$ROOT/BENCHMARKS.md"
TARGETS="direct nginx haproxy rampart"
SCENARIOS="steady kill-one kill-all all-down"
CONNECTIONS=32
THREADS=1
MODE=full
IDLE_CONNECTIONS=10000
SLOW_CONNECTIONS=2000
HOLD=""
# Limits of the proxies under test, raised by the connection scenarios.
NGINX_WORKER_CONNECTIONS=4096
HAPROXY_MAXCONN=4096
NGINX_RLIMIT_NOFILE=""
HAPROXY_MASTER_WORKER=0
ARGS_GIVEN="$*"

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) ROUNDS=1; DURATION=3; MODE=quick ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --micro) MICRO=1 ;;
    --micro-only) MICRO=1; MACRO=0 ;;
    --targets) TARGETS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    --idle-connections) IDLE_CONNECTIONS=$2; shift ;;
    --slow-connections) SLOW_CONNECTIONS=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    -h|--help) sed -n '2,46p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

TMP=$(mktemp -d /tmp/rampart-bench.XXXXXX)
PIDS=()

# Stop every process this script started, by PID (TERM, then KILL what is left).
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Forget PIDs that have been stopped (keeps the cleanup list short).
forget() {
  local keep=() pid gone
  for pid in "${PIDS[@]}"; do
    gone=0
    for g in "$@"; do [ "$pid" = "$g" ] && gone=1; done
    [ "$gone" = 1 ] || keep+=("$pid")
  done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

stop() { # stop PID... (TERM, wait up to 2 s, then KILL)
  local pid i
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || true
  done
  forget "$@"
}

# ---------------------------------------------------------------------------------------------
# Tools
ensure_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian 12 ships nginx-light as a transitional package; fall back to nginx.
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$TMP/apt.log" 2>&1; then
      local alt=("${missing[@]/nginx-light/nginx}")
      apt-get install -y -qq --no-install-recommends "${alt[@]}" >>"$TMP/apt.log" 2>&1
    fi
    # The packages' scripts may start system services; this script does not use them.
    if command -v service >/dev/null 2>&1; then
      service nginx stop >/dev/null 2>&1 || true
      service haproxy stop >/dev/null 2>&1 || true
    fi
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

free_port() { # a port nothing listens on (random pick below the ephemeral range, checked)
  local p lo
  lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

wait_http() { # wait_http ADDR [seconds]: until GET / answers anything
  local addr=$1 n=$(( ${2:-10} * 20 )) i
  for i in $(seq "$n"); do
    if curl -s -o /dev/null --max-time 1 "http://$addr/"; then return 0; fi
    sleep 0.05
  done
  log "timed out waiting for ${addr:-(no address)} (${3:-?})"; return 1
}

read_addr() { # read_addr FILE PID: the first line a child prints (its bound address)
  local f=$1 pid=$2 i
  for i in $(seq 100); do
    if [ -s "$f" ]; then head -n1 "$f"; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  log "no address from pid $pid ($f)"; return 1
}

# ---------------------------------------------------------------------------------------------
# Backends and proxies
BACKEND_PIDS=()
BACKEND_ADDRS=()
start_backends() {
  BACKEND_PIDS=(); BACKEND_ADDRS=()
  local i pid
  # Remove the previous run's address files first: the child truncates its file only after
  # the fork, so a stale address could otherwise be read in between.
  rm -f "$TMP"/backend[123].out
  for i in 1 2 3; do
    "$BIN/backend" --listen 127.0.0.1:0 >"$TMP/backend$i.out" 2>"$TMP/backend$i.err" &
    pid=$!; PIDS+=("$pid"); BACKEND_PIDS+=("$pid")
  done
  local a
  for i in 0 1 2; do
    a=$(read_addr "$TMP/backend$((i + 1)).out" "${BACKEND_PIDS[$i]}") || return 1
    BACKEND_ADDRS+=("$a")
  done
  for i in 0 1 2; do wait_http "${BACKEND_ADDRS[$i]}" 5 "backend $((i + 1))" || return 1; done
}

nginx_conf() { # nginx_conf PORT
  local port=$1 a
  mkdir -p "$TMP/nginx"
  {
    echo "daemon off;"
    echo "master_process on;"
    echo "worker_processes auto;"
    echo "pid $TMP/nginx/nginx.pid;"
    echo "error_log $TMP/nginx/error.log warn;"
    [ -n "$NGINX_RLIMIT_NOFILE" ] && echo "worker_rlimit_nofile $NGINX_RLIMIT_NOFILE;"
    echo "events { worker_connections $NGINX_WORKER_CONNECTIONS; }"
    echo "http {"
    echo "  access_log off;"
    echo "  client_body_temp_path $TMP/nginx/body; proxy_temp_path $TMP/nginx/proxy;"
    echo "  fastcgi_temp_path $TMP/nginx/fastcgi; uwsgi_temp_path $TMP/nginx/uwsgi; scgi_temp_path $TMP/nginx/scgi;"
    echo "  upstream replicas {"
    for a in "${BACKEND_ADDRS[@]}"; do echo "    server $a max_fails=1 fail_timeout=10s;"; done
    echo "    keepalive 64;"
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:$port;"
    echo "    location / {"
    echo "      proxy_pass http://replicas;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\";"
    echo "      proxy_next_upstream error timeout http_502 http_503;"
    echo "      proxy_connect_timeout 1s;"
    echo "      proxy_read_timeout 5s;"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$TMP/nginx/nginx.conf"
}

haproxy_conf() { # haproxy_conf PORT
  local port=$1 i=0 a
  mkdir -p "$TMP/haproxy"
  {
    echo "global"
    echo "  maxconn $HAPROXY_MAXCONN"
    echo "  pidfile $TMP/haproxy/haproxy.pid"
    echo "defaults"
    echo "  mode http"
    echo "  timeout connect 1s"
    echo "  timeout client 10s"
    echo "  timeout server 5s"
    echo "  retries 3"
    echo "  option redispatch"
    echo "  http-reuse always"
    echo "frontend fe"
    echo "  bind 127.0.0.1:$port"
    echo "  default_backend replicas"
    echo "backend replicas"
    echo "  balance roundrobin"
    echo "  option httpchk GET /healthz"
    for a in "${BACKEND_ADDRS[@]}"; do
      i=$((i + 1)); echo "  server r$i $a check inter 1s fall 2 rise 2"
    done
  } >"$TMP/haproxy/haproxy.cfg"
}

# The rampart-gateway configuration: the three backends in one cluster, checks every second
# (fall 2, rise 2), retries on another replica without a budget cap (the failover scenarios
# count every non-2xx), no admin listener. GATEWAY_TOML is appended (e.g. a [server] table).
gateway_conf() {
  local eps="" a
  for a in "${BACKEND_ADDRS[@]}"; do eps+="${eps:+, }\"$a\""; done
  cat >"$TMP/gateway.toml" <<TOML
${GATEWAY_TOML:-}
[admin]
enabled = false

[[routes]]
cluster = "backends"

[clusters.backends]
endpoints = [$eps]
retry_after = "5s"
retry_budget_ratio = 1.0

[clusters.backends.checks]
interval = "1s"
timeout = "500ms"
fall = 2
rise = 2

[clusters.backends.breaker]
open_duration = "2s"
TOML
  if ! grep -q '^\[server\]' "$TMP/gateway.toml"; then
    printf '[server]\nlisten = "127.0.0.1:0"\n' | cat - "$TMP/gateway.toml" >"$TMP/gateway.toml.new"
    mv "$TMP/gateway.toml.new" "$TMP/gateway.toml"
  fi
  "$BIN/rampart-gateway" --check "$TMP/gateway.toml" >/dev/null
}

PROXY_PID=""
PROXY_ADDR=""
start_proxy() { # start_proxy TARGET: sets PROXY_PID and PROXY_ADDR
  local target=$1 port
  PROXY_PID=""
  case "$target" in
    direct) PROXY_ADDR=${BACKEND_ADDRS[0]}; return 0 ;;
    nginx)
      port=$(free_port); nginx_conf "$port"
      nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" >"$TMP/nginx/out.log" 2>&1 &
      PROXY_PID=$!; PROXY_ADDR="127.0.0.1:$port" ;;
    haproxy)
      port=$(free_port); haproxy_conf "$port"
      # Master-worker mode (-W) for the reload scenario: SIGUSR2 to the master reloads.
      if [ "$HAPROXY_MASTER_WORKER" = 1 ]; then
        haproxy -W -db -f "$TMP/haproxy/haproxy.cfg" >"$TMP/haproxy/out.log" 2>&1 &
      else
        haproxy -db -f "$TMP/haproxy/haproxy.cfg" >"$TMP/haproxy/out.log" 2>&1 &
      fi
      PROXY_PID=$!; PROXY_ADDR="127.0.0.1:$port" ;;
    rampart)
      # The rampart-gateway binary as a user runs it: from a configuration file.
      gateway_conf || return 1
      rm -f "$TMP/gateway.out" # see start_backends
      "$BIN/rampart-gateway" --config "$TMP/gateway.toml" >"$TMP/gateway.out" 2>"$TMP/gateway.err" &
      PROXY_PID=$!; PIDS+=("$PROXY_PID")
      PROXY_ADDR=$(read_addr "$TMP/gateway.out" "$PROXY_PID") || return 1
      PROXY_ADDR=${PROXY_ADDR#listening on http://} ;;
    lean)
      local ups=() a
      for a in "${BACKEND_ADDRS[@]}"; do ups+=(--upstream "$a"); done
      rm -f "$TMP/gateway.out" # see start_backends
      local flags=()
      read -r -a flags <<<"$GATEWAY_FLAGS" # extra flags, split on blanks
      "$BIN/gateway" --listen 127.0.0.1:0 --stack lean "${ups[@]}" "${flags[@]}" \
        >"$TMP/gateway.out" 2>"$TMP/gateway.err" &
      PROXY_PID=$!; PIDS+=("$PROXY_PID")
      PROXY_ADDR=$(read_addr "$TMP/gateway.out" "$PROXY_PID") || return 1 ;;
    *) log "unknown target $target"; return 1 ;;
  esac
  case "$target" in nginx|haproxy) PIDS+=("$PROXY_PID") ;; esac
  wait_http "$PROXY_ADDR" 10 "$target"
}
GATEWAY_FLAGS=${GATEWAY_FLAGS:-}

# ---------------------------------------------------------------------------------------------
# Measurements
cat >"$TMP/status.lua" <<'LUA'
-- Counts responses by status code per thread and prints "status CODE COUNT" lines at the end.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for code, n in pairs(c) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d %d\n", code, n)) end
end
LUA

# CPU time (user + system, in clock ticks) of a process and its children (nginx's workers).
cpu_ticks() {
  local t=0 p v
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

WRK_BASE=(wrk "-t$THREADS" "-c$CONNECTIONS" "-d${DURATION}s" --latency)

measure() { # measure ROUND SCENARIO TARGET
  local round=$1 scenario=$2 target=$3 out wrk_pid pid lua=()
  out="$TMP/results/r$round.$scenario.$target"
  mkdir -p "$TMP/results"
  PROXY_PID=""
  if ! start_backends || ! start_proxy "$target"; then
    log "round $round $scenario $target: setup failed (skipped; recorded as failed)"
    echo "setup failed" >"$out.wrk"
    { ps -o pid,stat,cmd -p "${BACKEND_PIDS[*]:-1}" ${PROXY_PID:+-p "$PROXY_PID"} || true
      tail -n 20 "$TMP"/backend*.err "$TMP/gateway.err" "$TMP/haproxy/out.log" "$TMP/nginx/error.log" 2>/dev/null || true
    } >"$out.setup-failure" 2>&1
    [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
    stop "${BACKEND_PIDS[@]}"
    return 0
  fi
  if [ "$scenario" = kill-all ]; then lua=(-s "$TMP/status.lua"); fi
  if [ "$scenario" = all-down ]; then
    kill -KILL "${BACKEND_PIDS[@]}" 2>/dev/null || true
    for pid in "${BACKEND_PIDS[@]}"; do { wait "$pid"; } 2>/dev/null || true; done
    forget "${BACKEND_PIDS[@]}"
    sleep 3 # long enough for every proxy's checks (HAProxy: fall 2 x inter 1 s) to notice
    curl -s -o /dev/null -D "$out.probe" --max-time 5 "http://$PROXY_ADDR/" || echo "probe failed" >"$out.probe"
  fi
  local cpu_pid=${PROXY_PID:-${BACKEND_PIDS[0]}} cpu0
  cpu0=$(cpu_ticks "$cpu_pid")
  timeout $((DURATION + 20)) "${WRK_BASE[@]}" "${lua[@]}" "http://$PROXY_ADDR/" >"$out.wrk" 2>&1 &
  wrk_pid=$!; PIDS+=("$wrk_pid")
  case "$scenario" in
    kill-one)
      sleep "$(awk "BEGIN{print $DURATION/2}")"
      kill -KILL "${BACKEND_PIDS[1]}" 2>/dev/null || true ;;
    kill-all)
      sleep "$(awk "BEGIN{print $DURATION/2}")"
      kill -KILL "${BACKEND_PIDS[@]}" 2>/dev/null || true ;;
  esac
  { wait "$wrk_pid"; } 2>/dev/null || log "wrk exited with $? ($round $scenario $target)"
  forget "$wrk_pid"
  echo "$(( $(cpu_ticks "$cpu_pid") - cpu0 )) $HZ" >"$out.cpu"
  if [ "$scenario" = kill-all ] && [ -n "$PROXY_PID" ]; then
    curl -s -o /dev/null -D "$out.probe" --max-time 5 "http://$PROXY_ADDR/" || echo "probe failed" >"$out.probe"
  fi
  [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
  stop "${BACKEND_PIDS[@]}"
  local rps; rps=$(awk '/Requests\/sec/{print $2}' "$out.wrk")
  log "round $round $scenario $target: ${rps:-?} req/s"
}

# ---------------------------------------------------------------------------------------------
# Connection scenarios (idle-conns, slow-clients) and the reload scenario

# Resident memory (KiB) of a process and its children (nginx's and HAProxy's workers).
rss_kib() {
  local t=0 p v
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

# Raises the file limit of this shell and its children to 65,536 when allowed (root with
# CAP_SYS_RESOURCE), else to the hard limit; sets the proxies' connection limits from it
# (HAProxy needs two descriptors per connection it may hold).
raise_file_limit() {
  local limit
  if ! ulimit -n 65536 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  fi
  limit=$(ulimit -n)
  [ "$limit" = unlimited ] && limit=65536
  NGINX_RLIMIT_NOFILE=$limit
  NGINX_WORKER_CONNECTIONS=$(( limit / 2 > 20000 ? 20000 : limit / 2 ))
  HAPROXY_MAXCONN=$(( (limit - 200) / 2 > 20000 ? 20000 : (limit - 200) / 2 ))
  GATEWAY_MAX_CONNECTIONS=$(( limit - 200 > 20000 ? 20000 : limit - 200 ))
  log "file limit $limit: nginx worker_connections $NGINX_WORKER_CONNECTIONS, HAProxy maxconn $HAPROXY_MAXCONN, gateway max_connections $GATEWAY_MAX_CONNECTIONS"
  if [ "$HAPROXY_MAXCONN" -lt "$IDLE_CONNECTIONS" ]; then
    log "HAProxy holds at most $HAPROXY_MAXCONN connections (raise the hard file limit above $((2 * IDLE_CONNECTIONS + 200)) for $IDLE_CONNECTIONS)"
  fi
}

measure_conns() { # measure_conns ROUND SCENARIO TARGET
  local round=$1 scenario=$2 target=$3 out n mode hold hold_pid i
  out="$TMP/conns/r$round.$scenario.$target"
  mkdir -p "$TMP/conns"
  case "$scenario" in
    idle-conns) n=$IDLE_CONNECTIONS; mode=idle; hold=${HOLD:-80} ;;
    slow-clients) n=$SLOW_CONNECTIONS; mode=half; hold=${HOLD:-70} ;;
  esac
  PROXY_PID=""
  if ! start_backends || ! start_proxy "$target"; then
    log "round $round $scenario $target: setup failed (skipped)"
    echo "setup failed" >"$out.summary"
    [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
    stop "${BACKEND_PIDS[@]}"
    return 0
  fi
  curl -s -o /dev/null --max-time 2 "http://$PROXY_ADDR/" || true # warm up
  sleep 1
  echo "rss_before_kib $(rss_kib "$PROXY_PID")" >"$out.summary"
  "$BIN/hold" --addr "$PROXY_ADDR" --connections "$n" --mode "$mode" --hold "$hold" \
    >"$out.hold" 2>&1 &
  hold_pid=$!; PIDS+=("$hold_pid")
  for i in $(seq 1200); do
    grep -q '^held' "$out.hold" 2>/dev/null && break
    kill -0 "$hold_pid" 2>/dev/null || break
    sleep 0.1
  done
  # Held: 5 s after the last connection opened (the gateway hands an idle keep-alive
  # connection's hyper state back after 1 s, and its allocator returns the pages in about 1 s).
  sleep 5
  echo "rss_held_kib $(rss_kib "$PROXY_PID")" >>"$out.summary"
  # A normal request's latency while the connections are held (each on a new connection).
  for i in $(seq 20); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 5 "http://$PROXY_ADDR/" \
      >>"$out.latency" 2>/dev/null || echo "000 5" >>"$out.latency"
  done
  { wait "$hold_pid"; } 2>/dev/null || true
  forget "$hold_pid"
  sleep 2 # the proxy notices the closed connections and frees them
  echo "rss_after_kib $(rss_kib "$PROXY_PID")" >>"$out.summary"
  grep -v '^held' "$out.hold" >>"$out.summary" || true
  stop "$PROXY_PID"
  stop "${BACKEND_PIDS[@]}"
  log "round $round $scenario $target: $(tr '\n' ' ' <"$out.summary")"
}

measure_reload() { # measure_reload ROUND TARGET
  local round=$1 target=$2 out wrk_pid
  out="$TMP/conns/r$round.reload.$target"
  mkdir -p "$TMP/conns"
  PROXY_PID=""
  HAPROXY_MASTER_WORKER=1
  if ! start_backends || ! start_proxy "$target"; then
    HAPROXY_MASTER_WORKER=0
    log "round $round reload $target: setup failed (skipped)"
    echo "setup failed" >"$out.wrk"
    [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
    stop "${BACKEND_PIDS[@]}"
    return 0
  fi
  HAPROXY_MASTER_WORKER=0
  timeout $((DURATION + 20)) "${WRK_BASE[@]}" -s "$TMP/status.lua" "http://$PROXY_ADDR/" >"$out.wrk" 2>&1 &
  wrk_pid=$!; PIDS+=("$wrk_pid")
  sleep "$(awk "BEGIN{print $DURATION/2}")"
  case "$target" in
    nginx|rampart) kill -HUP "$PROXY_PID" 2>/dev/null || true ;;
    haproxy) kill -USR2 "$PROXY_PID" 2>/dev/null || true ;;
  esac
  { wait "$wrk_pid"; } 2>/dev/null || log "wrk exited with $? (reload $target)"
  forget "$wrk_pid"
  stop "$PROXY_PID"
  stop "${BACKEND_PIDS[@]}"
  log "round $round reload $target: $(awk '/Requests\/sec/{print $2}' "$out.wrk") req/s, non-2xx: $(awk '/Non-2xx/{print $NF}' "$out.wrk"), $(grep 'Socket errors' "$out.wrk" || echo 'no socket errors')"
}

summary_value() { # summary_value FILE KEY
  awk -v k="$2" '$1 == k {print $2}' "$1" 2>/dev/null
}

# The markdown of the connection and reload scenarios, from $TMP/conns.
conns_report() {
  local f scenario target n b h a per lat
  echo "### Idle keep-alive connections and slow clients"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M') UTC, \`bench/run.sh $ARGS_GIVEN\`. RSS of the proxy and its workers (held: 5 s after"
  echo "the last connection opened); KiB per connection = (held - before) / connections; latency: 20 normal requests on new connections"
  echo "while the others are held (median / max); closed: connections the proxy closed during the"
  echo "hold (median time after all were open); 408: answers before closing."
  echo
  echo "| scenario | target | held | RSS before / held / after (MiB) | KiB per connection | normal request ms (median / max, non-200) | closed by the proxy (median s) | 408 |"
  echo "|---|---|---|---|---|---|---|---|"
  for f in "$TMP"/conns/*.summary; do
    [ -e "$f" ] || continue
    scenario=$(basename "$f" .summary); target=${scenario##*.}; scenario=${scenario#*.}; scenario=${scenario%.*}
    n=$(summary_value "$f" opened); b=$(summary_value "$f" rss_before_kib)
    h=$(summary_value "$f" rss_held_kib); a=$(summary_value "$f" rss_after_kib)
    if [ -z "$n" ] || [ -z "$b" ] || [ -z "$h" ]; then
      echo "| $scenario | $target | setup failed | | | | | |"; continue
    fi
    per=$(awk -v b="$b" -v h="$h" -v n="$n" 'BEGIN{ if (n > 0) printf "%.1f", (h - b) / n; else print "-" }')
    lat=$(sort -k2 -g "${f%.summary}.latency" | awk '{t[NR]=$2*1000; if ($1 != 200) bad++} END{ if (NR) printf "%.1f / %.1f, %d", t[int((NR+1)/2)], t[NR], bad; else print "-" }')
    echo "| $scenario | $target | $n | $(awk -v b="$b" -v h="$h" -v a="$a" 'BEGIN{printf "%.1f / %.1f / %.1f", b/1024, h/1024, a/1024}') | $per | $lat | $(summary_value "$f" closed_by_server) ($(summary_value "$f" closed_p50_s)) | $(summary_value "$f" answered_408) |"
  done
  echo
  echo "### Configuration reload mid-run"
  echo
  echo "| target | req/s | non-2xx | socket errors (connect, read, write, timeout) |"
  echo "|---|---|---|---|"
  for f in "$TMP"/conns/*.reload.*.wrk; do
    [ -e "$f" ] || continue
    target=${f##*.reload.}; target=${target%.wrk}
    echo "| $target | $(awk '/Requests\/sec/{print $2}' "$f") | $(awk '/Non-2xx/{print $NF}' "$f" | grep . || echo 0) | $(sed -n 's/.*Socket errors: //p' "$f" | grep . || echo none) |"
  done
}

# Replaces the section between the rampart-bench:NAME markers of FILE with stdin (appends the
# section with its markers when FILE has none).
splice_section() { # splice_section NAME FILE
  local name=$1 file=$2 body begin end
  body=$(cat)
  begin="<!-- rampart-bench:$name:begin -->"; end="<!-- rampart-bench:$name:end -->"
  if [ -f "$file" ] && grep -qF "$begin" "$file"; then
    awk -v b="$begin" -v e="$end" -v body="$body" '
      $0 == b { print; print body; skip = 1; next }
      $0 == e { skip = 0 }
      !skip { print }' "$file" >"$file.new"
    mv "$file.new" "$file"
  else
    printf '\n%s\n%s\n%s\n' "$begin" "$body" "$end" >>"$file"
  fi
}

machine() {
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M')"
  echo "- CPU: $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}'), nproc = $(nproc)"
  echo "- kernel: $(uname -sr)"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*version: //')"
  echo "- HAProxy: $(haproxy -v 2>/dev/null | head -n1 | awk '{print $3}')"
  echo "- wrk: $(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
  echo "- rustc: $(rustc --version)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ---------------------------------------------------------------------------------------------
if [ "$MACRO" = 1 ]; then
  ensure_tools
  log "building release binaries"
  cargo build --release -p rampart-bench -p rampart-gateway --bins --quiet
  machine >"$TMP/machine.md"
  {
    echo "bench/run.sh $ARGS_GIVEN"
    echo "load: ${WRK_BASE[*]} http://ADDR/   (kill-all adds -s status.lua)"
    echo "rampart: target/release/rampart-gateway --config gateway.toml (generated by gateway_conf in bench/run.sh: one cluster of the three backends, checks every 1 s, fall 2, rise 2)"
    echo "lean:    target/release/gateway --listen 127.0.0.1:0 --stack lean --upstream A --upstream B --upstream C $GATEWAY_FLAGS"
  } >"$TMP/commands.txt"
  WRK_SCENARIOS=0; CONN_SCENARIOS=0
  for scenario in $SCENARIOS; do
    case "$scenario" in
      idle-conns|slow-clients|reload) CONN_SCENARIOS=1 ;;
      *) WRK_SCENARIOS=1 ;;
    esac
  done
  if [ "$CONN_SCENARIOS" = 1 ]; then
    raise_file_limit
    GATEWAY_TOML=${GATEWAY_TOML:-$'[server]\nlisten = "127.0.0.1:0"\n'"max_connections = $GATEWAY_MAX_CONNECTIONS"}
  fi
  for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
      for target in $TARGETS; do
        # Direct traffic is the yardstick of the steady state only (a dead replica answers nothing).
        if [ "$target" = direct ] && [ "$scenario" != steady ]; then continue; fi
        case "$scenario" in
          idle-conns|slow-clients|reload)
            # Proxies only, as a user runs them.
            case "$target" in nginx|haproxy|rampart) ;; *) continue ;; esac
            if [ "$scenario" = reload ]; then
              measure_reload "$round" "$target"
            else
              measure_conns "$round" "$scenario" "$target"
            fi ;;
          *) measure "$round" "$scenario" "$target" ;;
        esac
      done
    done
  done
  if [ "$WRK_SCENARIOS" = 1 ]; then
    "$BIN/report" macro --results "$TMP/results" --machine "$TMP/machine.md" \
      --commands "$TMP/commands.txt" --mode "$MODE" --out "$OUT"
    log "wrote the HTTP results to $OUT"
  fi
  if [ "$CONN_SCENARIOS" = 1 ]; then
    conns_report | splice_section connections "$OUT"
    log "wrote the connection scenarios to $OUT"
  fi
fi

if [ "$MICRO" = 1 ]; then
  mkdir -p "$TMP/micro"
  for spec in rampart-breaker:overhead rampart-balance:pick rampart-gslb:select rampart-fallback:apology rampart-health:outlier storefront:page_layers; do
    pkg=${spec%%:*}; bench=${spec##*:}
    dir=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
      grep -o "\"manifest_path\":\"[^\"]*/$pkg/Cargo.toml\"" | head -n1 | sed 's/.*:"//; s/Cargo.toml"//')
    if [ -z "$dir" ] || { [ ! -f "$dir/benches/$bench.rs" ] && [ ! -f "$dir/benches/$bench/main.rs" ]; }; then
      log "skipping $pkg --bench $bench (not there yet)"
      echo "skipped: not present" >"$TMP/micro/$pkg.$bench.txt"
      continue
    fi
    log "cargo bench -p $pkg --bench $bench"
    timeout 900 cargo bench -p "$pkg" --bench "$bench" -- --warm-up-time 1 --measurement-time 3 \
      >"$TMP/micro/$pkg.$bench.txt" 2>&1 || log "$pkg --bench $bench failed (see the report)"
  done
  cargo build --release -p rampart-bench --bin report --quiet
  "$BIN/report" micro --results "$TMP/micro" --out "$OUT"
  log "wrote the micro-benchmark results to $OUT"
fi
