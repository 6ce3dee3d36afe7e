#!/usr/bin/env bash
# loadgen (each --engine) vs wrk against the cepoll peer: one thread each, same connections,
# interleaved rounds; the peer pinned to CPU 0, every generator to CPU 1 (taskset).
# Prints each run's req/s and CPU per request (user+sys of the generator process, from
# /usr/bin/time), then the medians and their ratios to wrk's.
#   loadgen/scripts/bench-vs-wrk.sh [ROUNDS] [CONNS] [SECONDS] [PORT] [ENGINES]
# ENGINES: loadgen engines to run, space-separated (default "epoll uring").
# Needs: cargo build -p loadgen --release; cc (the peer is built if missing); wrk (apt-get
# install -y wrk); /usr/bin/time; taskset.
set -euo pipefail
rounds=${1:-3}; conns=${2:-100}; secs=${3:-10}; port=${4:-18391}; engines=${5:-epoll uring}
root=$(cd "$(dirname "$0")/../.." && pwd)
loadgen=$root/target/release/loadgen
peer=$root/benches/peers/cepoll/cepoll
[ -x "$peer" ] || cc -O2 -Wall -o "$peer" "$peer.c"
out=$(mktemp -d)
taskset -c 0 "$peer" --port "$port" > "$out/peer.txt" 2>&1 &
peer_pid=$!
trap 'kill $peer_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$out/peer.txt" 2>/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port/
# One line per run in $out/runs: NAME REQ_PER_S CPU_US_PER_REQ
cpu_per_req() { awk -v n="$2" '{printf "%.3f", ($1+$2)*1e6/n}' "$1"; }
for r in $(seq "$rounds"); do
  line="round $r:"
  for e in $engines; do
    taskset -c 1 /usr/bin/time -f "%U %S" -o "$out/lg.time" "$loadgen" http "$url" -t 1 \
      -c "$conns" -d "${secs}s" --engine "$e" --json "$out/lg.json" > "$out/lg.txt"
    read -r rps n p50 p99 < <(python3 -c "import json;r=json.load(open('$out/lg.json'));l=r['latency_us'];print(round(r['rates']['req_per_s']),r['requests']['completed'],l['p50'],l['p99'])")
    cpu=$(cpu_per_req "$out/lg.time" "$n")
    echo "$e $rps $cpu" >> "$out/runs"
    line="$line | loadgen $e $rps req/s, $cpu us cpu/req, p50/p99 us $p50/$p99"
  done
  taskset -c 1 /usr/bin/time -f "%U %S" -o "$out/wrk.time" wrk -t1 -c "$conns" -d "${secs}s" \
    --latency "$url" > "$out/wrk.txt"
  n=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$out/wrk.txt")
  p=$(awk '/^ +50%|^ +99%/ {printf "%s ", $2}' "$out/wrk.txt")
  cpu=$(cpu_per_req "$out/wrk.time" "$n")
  echo "wrk $rps $cpu" >> "$out/runs"
  echo "$line | wrk $rps req/s, $cpu us cpu/req, p50/p99 $p"
done
python3 - "$out/runs" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, rps, cpu = line.split()
    runs.setdefault(name, []).append((float(rps), float(cpu)))
med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
w_rps, w_cpu = med["wrk"]
for name, (rps, cpu) in med.items():
    print(f"median {name}: {rps:,.0f} req/s ({rps / w_rps:.2f}x wrk), {cpu:.2f} us cpu/req ({cpu / w_cpu:.2f}x wrk)")
EOF
