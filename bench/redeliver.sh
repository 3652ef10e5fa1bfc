#!/usr/bin/env bash
# bench/redeliver.sh measures what a worker killed with pieces in hand
# costs (issue 11): a `flowrun broker` on loopback, a run of 16 records
# of a 200 ms stage (16 pieces of one record each) with --ack-wait 1s, a
# worker with 16 slots that takes them all and is killed (kill -9), and a
# second worker that works them once they come again. It prints how
# long the run took from the kill to its end, RUNS times (default 3):
# the ack wait (1 s) plus the work of the 16 pieces delivered again.
#
#   bench/redeliver.sh
#   FLOWRUN=/path/to/flowrun bench/redeliver.sh   # another build
#   MAX_DELIVER=3 bench/redeliver.sh              # pieces delivered again are worked alone
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MAX_DELIVER=${MAX_DELIVER:-5}
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
BIN=${FLOWRUN:-$DIR/flowrun}
[[ -n ${FLOWRUN:-} ]] || go build -o "$BIN" .

PORT=$((20000 + RANDOM % 20000))
"$BIN" broker --listen "127.0.0.1:$PORT" --store "$DIR/store" >"$DIR/broker.out" 2>"$DIR/broker.err" &
for _ in $(seq 100); do [[ -s $DIR/broker.out ]] && break; sleep 0.1; done
URL=nats://127.0.0.1:$PORT
cat >"$DIR/p.yaml" <<EOF
name: redeliver
stages:
  - use: sleep
    with: {duration: 200ms}
    workers: 16
EOF
seq 16 >"$DIR/in.txt"

# wait_for FILE TEXT waits until FILE holds TEXT.
wait_for() { for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return; sleep 0.02; done; }

for r in $(seq "$RUNS"); do
	"$BIN" worker "$DIR/p.yaml" --broker "$URL" 2>"$DIR/a.err" &
	a=$!
	wait_for "$DIR/a.err" "waiting for runs"
	"$BIN" run -q --progress none --broker "$URL" --no-local-workers --ack-wait 1s --max-deliver "$MAX_DELIVER" \
		-i "$DIR/in.txt" -o "$DIR/out.txt" "$DIR/p.yaml" &
	run=$!
	wait_for "$DIR/a.err" "joined run"
	sleep 0.1 # the pieces are in its hands, for 200 ms
	kill -9 "$a"
	killed=$(date +%s.%N)
	"$BIN" worker "$DIR/p.yaml" --broker "$URL" 2>"$DIR/b.err" &
	b=$!
	wait "$run"
	ended=$(date +%s.%N)
	kill "$b"
	wait "$b" || true
	wait "$a" 2>/dev/null || true
	n=$(wc -l <"$DIR/out.txt")
	printf 'run %d: %d records out, %.2f s from the kill to the end\n' "$r" "$n" "$(echo "$ended - $killed" | bc)"
done
