#!/usr/bin/env bash
# loadgen's own CPU per request, open loop against closed loop, against the cepoll peer (server
# pinned to CPU 0, loadgen to CPU 1, one loadgen thread), in interleaved rounds; then the CPU
# that 64 KiB echo verification costs per received GB.
#   loadgen/scripts/bench-loadgen.sh [ROUNDS] [SECONDS] [PORT]
# Environment: SAME_CONNS (default 4), WIDE_CONNS (100), WIDE_RATE (25000).
# Each round:
#  - same rate: a closed loop over SAME_CONNS connections reaches its rate R (the most those
#    connections carry, not the server's capacity); open loops at R over twice as many
#    connections follow (so that a due request finds a free connection), with the default
#    --schedule-tick and with --schedule-tick 0 (a wakeup per request, as before the tick);
#  - the setup of issue 14's figures: a closed loop over WIDE_CONNS connections (at whatever rate
#    it reaches), open loops over WIDE_CONNS connections at WIDE_RATE (below cepoll's capacity);
#  - echo: 64 KiB messages over 8 connections.
# CPU is the process's user+sys from its JSON report (loadgen.counters), divided by the requests
# completed. Needs: cargo build -p loadgen --release; python3; taskset; cc (the peer,
# benches/peers/cepoll, is built here when missing or older than its source).
set -euo pipefail
rounds=${1:-3}; secs=${2:-5}; port=${3:-18393}
same=${SAME_CONNS:-4}; wide=${WIDE_CONNS:-100}; wide_rate=${WIDE_RATE:-25000}
root=$(cd "$(dirname "$0")/../.." && pwd)
loadgen=$root/target/release/loadgen
cepoll=$root/benches/peers/cepoll/cepoll
[ "$cepoll" -nt "$cepoll.c" ] || cc -O2 -Wall -o "$cepoll" "$cepoll.c"
out=$(mktemp -d)
peer_pid=
start_peer() { # cepoll's flags (--echo): starts the peer on CPU 0 and waits for its ready line
  taskset -c 0 "$cepoll" "$@" --port "$port" > "$out/peer.txt" 2>&1 &
  peer_pid=$!
  for _ in $(seq 100); do grep -q listening "$out/peer.txt" 2>/dev/null && return; sleep 0.1; done
  echo "the peer did not start: $(cat "$out/peer.txt")" >&2; exit 1
}
stop_peer() { [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null; wait "$peer_pid" 2>/dev/null || true; peer_pid=; }
trap stop_peer EXIT
# FILE → "req/s cpu_us_per_req p50_us p99_us wakeups_per_req"
summary() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); c = r['loadgen']['counters']; n = max(r['requests']['completed'], 1)
print(round(r['rates']['req_per_s']), round((c['process_user_us'] + c['process_sys_us']) / n, 2),
      r['latency_us']['p50'], r['latency_us']['p99'], round(c['wakeups'] / n, 3))
PY
}
lg() { # CONNS NAME [options]: one run, its summary
  local conns=$1 name=$2; shift 2
  taskset -c 1 "$loadgen" http "http://127.0.0.1:$port/" -t 1 -c "$conns" -d "${secs}s" "$@" \
    --json "$out/$name.json" > /dev/null
  summary "$out/$name.json"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
start_peer
echo "columns: req/s, loadgen CPU us/request, p50 us, p99 us, wakeups/request"
for r in $(seq "$rounds"); do
  read -r rate c_cpu rest_c < <(lg "$same" closed); echo "round $r same rate: closed c=$same: $rate $c_cpu $rest_c"
  read -r got o_cpu rest_o < <(lg $((2 * same)) open --rate "$rate"); echo "round $r same rate: open c=$((2 * same)) --rate $rate: $got $o_cpu $rest_o"
  read -r got z_cpu rest_z < <(lg $((2 * same)) open0 --rate "$rate" --schedule-tick 0); echo "round $r same rate: open tick 0: $got $z_cpu $rest_z"
  echo "round $r same rate: open/closed CPU per request $(ratio "$o_cpu" "$c_cpu") (tick 0: $(ratio "$z_cpu" "$c_cpu"))"
  read -r rate c_cpu rest_c < <(lg "$wide" wclosed); echo "round $r wide: closed c=$wide: $rate $c_cpu $rest_c"
  read -r got o_cpu rest_o < <(lg "$wide" wopen --rate "$wide_rate"); echo "round $r wide: open c=$wide --rate $wide_rate: $got $o_cpu $rest_o"
  read -r got z_cpu rest_z < <(lg "$wide" wopen0 --rate "$wide_rate" --schedule-tick 0); echo "round $r wide: open tick 0: $got $z_cpu $rest_z"
  echo "round $r wide: open/closed CPU per request $(ratio "$o_cpu" "$c_cpu") (tick 0: $(ratio "$z_cpu" "$c_cpu"))"
done
stop_peer
start_peer --echo
for r in $(seq "$rounds"); do
  taskset -c 1 "$loadgen" echo "127.0.0.1:$port" -t 1 -c 8 -s 64k -d "${secs}s" --json "$out/echo.json" > /dev/null
  python3 - "$out/echo.json" "$r" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); c = r['loadgen']['counters']; q = r['requests']
gb = q['bytes_received'] / 1e9
print(f"echo round {sys.argv[2]}: {q['verified']} verified, {q['corrupted']} corrupted, "
      f"{gb * 8 / r['elapsed_s']:.2f} Gbit/s received, {gb / (c['process_user_us'] / 1e6):.1f} GB per user "
      f"CPU-second, {gb / ((c['process_user_us'] + c['process_sys_us']) / 1e6):.2f} per user+sys CPU-second")
PY
done
