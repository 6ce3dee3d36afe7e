#!/usr/bin/env bash
# loadgen vs wrk against the cepoll peer: one thread each, same connections, interleaved rounds.
# Prints req/s and CPU per request (user+sys of the generator process, from /usr/bin/time).
#   loadgen/scripts/bench-vs-wrk.sh [ROUNDS] [CONNS] [SECONDS] [PORT]
# Needs: cargo build -p loadgen --release; the cepoll peer built (benches/peers/README.md);
# wrk (apt-get install -y wrk); /usr/bin/time.
set -euo pipefail
rounds=${1:-3}; conns=${2:-100}; secs=${3:-10}; port=${4:-18391}
root=$(cd "$(dirname "$0")/../.." && pwd)
loadgen=$root/target/release/loadgen
peer=$root/benches/peers/cepoll/cepoll
out=$(mktemp -d)
"$peer" --port "$port" > "$out/peer.txt" 2>&1 &
peer_pid=$!
trap 'kill $peer_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$out/peer.txt" 2>/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port/
for r in $(seq "$rounds"); do
  /usr/bin/time -f "%U %S" -o "$out/lg.time" "$loadgen" http "$url" -t 1 -c "$conns" -d "${secs}s" --json "$out/lg.json" > "$out/lg.txt"
  lg_rps=$(python3 -c "import json;print(round(json.load(open('$out/lg.json'))['rates']['req_per_s']))")
  lg_n=$(python3 -c "import json;print(json.load(open('$out/lg.json'))['requests']['completed'])")
  lg_p=$(python3 -c "import json;l=json.load(open('$out/lg.json'))['latency_us'];print(l['p50'],l['p99'],l['p99_9'])")
  lg_cpu=$(awk -v n="$lg_n" '{printf "%.3f", ($1+$2)*1e6/n}' "$out/lg.time")
  /usr/bin/time -f "%U %S" -o "$out/wrk.time" wrk -t1 -c "$conns" -d "${secs}s" --latency "$url" > "$out/wrk.txt"
  wrk_n=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
  wrk_rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$out/wrk.txt")
  wrk_p=$(awk '/^ +50%|^ +99%/ {printf "%s ", $2}' "$out/wrk.txt")
  wrk_cpu=$(awk -v n="$wrk_n" '{printf "%.3f", ($1+$2)*1e6/n}' "$out/wrk.time")
  echo "round $r: loadgen $lg_rps req/s, $lg_cpu us cpu/req, p50/p99/p99.9 us: $lg_p | wrk $wrk_rps req/s, $wrk_cpu us cpu/req, p50/p99: $wrk_p"
done
