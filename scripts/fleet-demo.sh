#!/usr/bin/env bash
# The whole fleet on one machine, on loopback: one redis-server, two relays (regions "eu"
# and "us") announcing themselves into it, and two signaling nodes sharing calls through
# it and offering the live relays, ranked for each device. See README "Running a fleet".
#
#   scripts/fleet-demo.sh            # build (debug), start everything, wait for Ctrl-C
#   TURNPIKE=target/release/turnpike scripts/fleet-demo.sh   # use a binary you built
#
# Then open http://127.0.0.1:8080/ and http://127.0.0.1:8081/ (one signaling node each)
# and call between them, or watch the registry:
#
#   redis-cli -p 6390 zrange turnpike:fleet:relays 0 -1
#   redis-cli -p 6390 get turnpike:fleet:relay:relay-eu
#   kill -TERM "$(cat "$DEMO_DIR/relay-eu.pid")"   # drain eu: its calls move to us
#
# Ports (all on 127.0.0.1): Redis 6390; relay eu TURN 3478 (UDP/TCP), metrics 9641;
# relay us TURN 3479, metrics 9642; signaling 8080 and 8081 (metrics 9643, 9644; each
# signaling process also runs a relay of its own on 3480/3481, which it does not
# announce). Logs and configuration go to $DEMO_DIR (a fresh temporary directory).
# Ctrl-C stops every process this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null 2>&1 ||
    { echo "fleet-demo: redis-server is needed (apt-get install -y redis-server)" >&2; exit 1; }

if [ -z "${TURNPIKE:-}" ]; then
    cargo build --bin turnpike
    TURNPIKE=target/debug/turnpike
fi
DEMO_DIR=$(mktemp -d -t turnpike-fleet.XXXXXX)
export DEMO_DIR
REDIS_PORT=6390
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
SECRET=fleet-demo-secret

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo "fleet-demo: stopped; logs in $DEMO_DIR"
}
trap cleanup EXIT
trap "exit 130" INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$DEMO_DIR/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# relay NAME REGION TURN_PORT METRICS_PORT
relay() {
    cat >"$DEMO_DIR/relay-$1.toml" <<EOF
[server]
workers = 1
[listen]
udp = ["127.0.0.1:$3"]
tcp = ["127.0.0.1:$3"]
[relay]
bind_ipv4 = "127.0.0.1"
bind_ipv6 = ""
[auth]
secrets = ["$SECRET"]
[peers]
allow = ["127.0.0.1/32"]
[metrics]
listen = "127.0.0.1:$4"
[signaling]
listen = ""
[fleet]
redis_url = "$REDIS_URL"
id = "relay-$1"
region = "$2"
EOF
    "$TURNPIKE" serve --config "$DEMO_DIR/relay-$1.toml" --pid-file "$DEMO_DIR/relay-$1.pid" \
        >"$DEMO_DIR/relay-$1.log" 2>&1 &
    pids+=($!)
}

# signaling NAME LISTEN_PORT OWN_RELAY_PORT METRICS_PORT
signaling() {
    cat >"$DEMO_DIR/signaling-$1.toml" <<EOF
[server]
workers = 1
[listen]
udp = ["127.0.0.1:$3"]
tcp = []
[relay]
bind_ipv4 = "127.0.0.1"
bind_ipv6 = ""
[auth]
secrets = ["$SECRET"]
[metrics]
listen = "127.0.0.1:$4"
[signaling]
listen = "127.0.0.1:$2"
redis_url = "$REDIS_URL"
[fleet]
redis_url = "$REDIS_URL"
announce = false
EOF
    "$TURNPIKE" serve --config "$DEMO_DIR/signaling-$1.toml" >"$DEMO_DIR/signaling-$1.log" 2>&1 &
    pids+=($!)
}

relay eu eu 3478 9641
relay us us 3479 9642
signaling a 8080 3480 9643
signaling b 8081 3481 9644

sleep 2
echo "fleet-demo: relays in the registry:"
redis-cli -p "$REDIS_PORT" zrange turnpike:fleet:relays 0 -1 | sed 's/^/  /'
cat <<EOF
fleet-demo: running (files in $DEMO_DIR)
  signaling:  http://127.0.0.1:8080/  and  http://127.0.0.1:8081/
  registry:   redis-cli -p $REDIS_PORT get turnpike:fleet:relay:relay-eu
  per node:   curl -s 127.0.0.1:9643/metrics | grep turnpike_signaling_relays
  drain eu:   kill -TERM \$(cat $DEMO_DIR/relay-eu.pid)
Ctrl-C stops everything.
EOF
wait
