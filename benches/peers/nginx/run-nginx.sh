#!/bin/sh
# nginx peer for `loadgen compare --peers`: nginx with one worker, answering every path with
# 200 "Hello, World!", in the foreground. Takes `--port N` (0: a free port, chosen here) and
# prints "listening on 127.0.0.1:PORT peer=nginx" once nginx accepts connections.
# Needs nginx on PATH and python3 (to pick a free port and wait for it). Stop it with SIGTERM.
set -eu
port=0
while [ $# -gt 1 ]; do
    case "$1" in --port) port="$2"; shift 2 ;; *) shift ;; esac
done
if [ "$port" = 0 ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 0' TERM INT
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $dir/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 65536; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { default_type text/plain; return 200 "Hello, World!"; }
    }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf" &
pid=$!
python3 - "$port" <<'PY'
import socket, sys, time
deadline = time.time() + 10
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
        break
    except OSError:
        time.sleep(0.02)
else:
    sys.exit("nginx did not start listening")
PY
echo "listening on 127.0.0.1:$port peer=nginx"
wait "$pid"
