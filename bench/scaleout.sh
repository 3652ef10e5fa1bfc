#!/usr/bin/env bash
# bench/scaleout.sh measures flowrun across processes (issue 11): a
# `flowrun broker` on loopback, `flowrun worker` processes, and
# `flowrun run --broker URL --no-local-workers`, beside the in-memory run
# of the same pipeline, alternately, RUNS rounds, and prints a Markdown
# table of medians and ratios with the load average.
#
#   bench/scaleout.sh            # a few minutes
#   QUICK=1 bench/scaleout.sh    # smaller sizes, about a minute
#   RUNS=5 bench/scaleout.sh     # more rounds (default 3)
#   ONLY=io,cpu bench/scaleout.sh                # some of cheap,io,cpu,latency,memory
#   FLOWRUN=/tmp/old/flowrun bench/scaleout.sh   # that build, not this tree's
#
# Before and after a change, in alternating rounds (each build's run,
# worker and broker are its own):
#
#   git worktree add /tmp/before <rev> && (cd /tmp/before && go build -o /tmp/before.bin .)
#   go build -o /tmp/after.bin .
#   for r in 1 2 3; do for b in before after; do
#     FLOWRUN=/tmp/$b.bin QUICK=1 RUNS=1 bench/scaleout.sh >/tmp/$b.$r.md; done; done
#
# Everything runs on one machine: "2 worker processes" share its cores
# with the broker and the run, so the I/O-bound speed-ups say what a
# second machine would give, and the CPU-bound one what a second core does.
set -euo pipefail

cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
RUNS=${RUNS:-3}
log() { printf '%s\n' "$*" >&2; }
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/flowrun-bench-scaleout}
BIN=$DIR/bin
OUT=$DIR/out
mkdir -p "$BIN" "$OUT"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average at the start: $LOAD_START"

if [[ $QUICK == 1 ]]; then
	N_CHEAP=200000 N_IO=1000 N_CPU=600 N_MEM_SMALL=20000 N_MEM_LARGE=200000
else
	N_CHEAP=1000000 N_IO=2000 N_CPU=1500 N_MEM_SMALL=100000 N_MEM_LARGE=1000000
fi

ONLY=${ONLY:-cheap,io,cpu,latency,memory}
only() { [[ ,$ONLY, == *,$1,* ]]; }
if [[ -n ${FLOWRUN:-} ]]; then
	log "using $FLOWRUN"
	cp "$FLOWRUN" "$BIN/flowrun"
else
	log "building into $BIN"
	go build -o "$BIN/flowrun" .
fi
for b in gen timeit latency; do
	go build -o "$BIN/$b" "./bench/$b"
done

# data KIND N prints the path of N generated records, made once.
data() {
	local f="$DIR/$1-$2.txt"
	if [[ ! -s $f ]]; then
		"$BIN/gen" -kind "$1" -n "$2" -seed 1 >"$f.tmp"
		mv "$f.tmp" "$f"
	fi
	printf '%s\n' "$f"
}

# --- the broker and the workers ----------------------------------------------

WORKERS=()
BROKER_PID=
cleanup() {
	if declare -F stop_workers >/dev/null; then
		stop_workers
	fi
	if [[ -n $BROKER_PID ]]; then
		kill -TERM "$BROKER_PID" 2>/dev/null || true
		wait "$BROKER_PID" 2>/dev/null || true
	fi
}
trap cleanup EXIT

rm -rf "$DIR/store"
# Emptied here, not by the redirection below: that happens in the
# background, and the wait could see the URL of the last run's broker.
: >"$DIR/broker.url"
"$BIN/flowrun" broker --listen 127.0.0.1:0 --store "$DIR/store" >"$DIR/broker.url" 2>"$DIR/broker.log" &
BROKER_PID=$!
for _ in $(seq 100); do
	[[ -s $DIR/broker.url ]] && break
	sleep 0.1
done
URL=$(head -1 "$DIR/broker.url")
[[ -n $URL ]] || { log "flowrun broker did not start: $(cat "$DIR/broker.log")"; exit 1; }
log "broker at $URL"

# workers K PIPELINE [ARG...] starts K worker processes of PIPELINE and
# waits until each is waiting for runs.
workers() {
	local k=$1 p=$2 i
	shift 2
	for ((i = 0; i < k; i++)); do
		local errf="$DIR/worker.$i.log"
		: >"$errf"
		"$BIN/flowrun" worker "$p" --broker "$URL" "$@" 2>"$errf" &
		WORKERS+=($!)
		for _ in $(seq 100); do
			grep -q "waiting for runs" "$errf" && break
			sleep 0.05
		done
	done
}

stop_workers() {
	local pid
	for pid in "${WORKERS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${WORKERS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	WORKERS=()
}

# hwm PID prints a process's peak resident set (KiB).
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

# --- measuring -------------------------------------------------------------

FLOW=("$BIN/flowrun" run --progress none -q)
BROKER=(--broker "$URL" --no-local-workers)

median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# timed NAME IN CMD... runs CMD once with stdin from IN, stdout to
# $OUT/NAME, and prints its wall seconds.
timed() {
	local name=$1 in=$2
	shift 2
	local res
	res=$("$BIN/timeit" -in "$in" -out "$OUT/$name" -- "$@")
	printf '%s\n' "${res% *}"
}

same() {
	if ! cmp -s "$OUT/$1" "$OUT/$2"; then
		log "outputs $1 and $2 differ (see $OUT)"
		exit 1
	fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
meets() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v < t; print ok ? "yes" : "no" }'; }

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }

# --- cheap stages: records/s through the broker, 1 worker -----------------------

CHEAP=$(data lines "$N_CHEAP")
W1=bench/pipelines/w1.yaml
if only cheap; then
declare -a t_mem t_brk t_emb
workers 1 "$W1"
for ((r = 0; r < RUNS; r++)); do
	t_mem+=("$(timed cheap.mem "$CHEAP" "${FLOW[@]}" "$W1")")
	t_brk+=("$(timed cheap.brk "$CHEAP" "${FLOW[@]}" "${BROKER[@]}" "$W1")")
	t_emb+=("$(timed cheap.emb "$CHEAP" "${FLOW[@]}" --broker embedded "$W1")")
done
stop_workers
same cheap.mem cheap.brk
same cheap.mem cheap.emb
m_mem=$(printf '%s\n' "${t_mem[@]}" | median)
m_brk=$(printf '%s\n' "${t_brk[@]}" | median)
m_emb=$(printf '%s\n' "${t_emb[@]}" | median)
r_brk=$(rate "$N_CHEAP" "$m_brk")
row "W1 (trim, upper, grep), $N_CHEAP lines: in memory" "$m_mem s" "$(rate "$N_CHEAP" "$m_mem") rec/s" "" ""
row "the same through \`flowrun broker\`, 1 worker process" "$m_brk s" "$r_brk rec/s" ">= 100000 rec/s" "$(meets "$r_brk" ">=" 100000)"
row "the same with \`--broker embedded\` (one process, local workers)" "$m_emb s" "$(rate "$N_CHEAP" "$m_emb") rec/s" "" ""
fi

# --- I/O-bound: overhead against in memory, and 1, 2, 3 workers -----------------

# The per-record overhead is judged on the time per record, the slope
# between N_IO and 2 x N_IO records, so that the fixed cost of a run on a
# broker (its stream, the workers joining: ~0.3 s) is not counted as if
# each record paid a share of it.
if only io; then
IO=$DIR/io-$N_IO.txt
IO2=$DIR/io-$((2 * N_IO)).txt
seq 1 "$N_IO" >"$IO"
seq 1 "$((2 * N_IO))" >"$IO2"
IOP=bench/pipelines/scaleout-io.yaml
declare -a t_iom t_iom2 t_io1 t_io1b t_io2 t_io3 t_ioe t_ioe2
for k in 1 2 3; do
	workers "$k" "$IOP"
	for ((r = 0; r < RUNS; r++)); do
		v=$(timed "io.$k" "$IO2" "${FLOW[@]}" "${BROKER[@]}" "$IOP")
		case $k in
		1)
			t_io1+=("$v")
			t_iom2+=("$(timed io.mem "$IO2" "${FLOW[@]}" "$IOP")")
			t_iom+=("$(timed io.mems "$IO" "${FLOW[@]}" "$IOP")")
			t_io1b+=("$(timed io.1s "$IO" "${FLOW[@]}" "${BROKER[@]}" "$IOP")")
			# The same slots in one process: the run's own workers on
			# a broker it embeds (no other process to share the cores).
			t_ioe2+=("$(timed io.emb "$IO2" "${FLOW[@]}" --broker embedded "$IOP")")
			t_ioe+=("$(timed io.embs "$IO" "${FLOW[@]}" --broker embedded "$IOP")")
			;;
		2) t_io2+=("$v") ;;
		3) t_io3+=("$v") ;;
		esac
	done
	stop_workers
	same io.mem "io.$k"
done
same io.mem io.emb
m_iom=$(printf '%s\n' "${t_iom[@]}" | median)
m_iom2=$(printf '%s\n' "${t_iom2[@]}" | median)
m_io1b=$(printf '%s\n' "${t_io1b[@]}" | median)
m_io1=$(printf '%s\n' "${t_io1[@]}" | median)
m_io2=$(printf '%s\n' "${t_io2[@]}" | median)
m_io3=$(printf '%s\n' "${t_io3[@]}" | median)
over=$(awk -v b="$m_io1" -v m="$m_iom2" 'BEGIN { printf "%.1f", (b / m - 1) * 100 }')
slope=$(awk -v b2="$m_io1" -v b1="$m_io1b" -v m2="$m_iom2" -v m1="$m_iom" 'BEGIN { printf "%.1f", ((b2 - b1) / (m2 - m1) - 1) * 100 }')
perrec=$(awk -v b2="$m_io1" -v b1="$m_io1b" -v m2="$m_iom2" -v m1="$m_iom" -v n="$N_IO" 'BEGIN { printf "%.0f / %.0f", (m2 - m1) / n * 1e6, (b2 - b1) / n * 1e6 }')
row "sleep 5ms, 8 workers, $((2 * N_IO)) records: in memory" "$m_iom2 s" "" "" ""
row "the same through the broker, 1 worker process: whole run" "$m_io1 s" "+$over %" "" ""
row "per record (slope from $N_IO to $((2 * N_IO)) records; µs in memory / on the broker)" "$perrec µs" "+$slope %" "< 5 %" "$(meets "$slope" "<" 5)"
m_ioe=$(printf '%s\n' "${t_ioe[@]}" | median)
m_ioe2=$(printf '%s\n' "${t_ioe2[@]}" | median)
eslope=$(awk -v b2="$m_ioe2" -v b1="$m_ioe" -v m2="$m_iom2" -v m1="$m_iom" 'BEGIN { printf "%.1f", ((b2 - b1) / (m2 - m1) - 1) * 100 }')
eperrec=$(awk -v b2="$m_ioe2" -v b1="$m_ioe" -v m2="$m_iom2" -v m1="$m_iom" -v n="$N_IO" 'BEGIN { printf "%.0f / %.0f", (m2 - m1) / n * 1e6, (b2 - b1) / n * 1e6 }')
row "the same with \`--broker embedded\` (the run's own 8 slots): per record" "$eperrec µs" "+$eslope %" "< 5 %" "$(meets "$eslope" "<" 5)"
s2=$(ratio "$m_io1" "$m_io2")
s3=$(ratio "$m_io1" "$m_io3")
row "the same, 2 worker processes: speed-up over 1" "$m_io2 s" "${s2}x" ">= 1.8x" "$(meets "$s2" ">=" 1.8)"
row "the same, 3 worker processes: speed-up over 1" "$m_io3 s" "${s3}x" ">= 2.6x" "$(meets "$s3" ">=" 2.6)"
fi

# --- CPU-bound: 1 and 2 worker processes of 1 worker each ------------------------

# W6 as it is (1000 rounds, ~0.1 ms a record: the run's fixed cost on a
# broker, ~0.3 s, is most of the time), and with 20 times the rounds, so
# that the work is most of it and the ratio says what a second core buys.
# And W6 on ten times the records, so that the work of 1000 rounds is
# most of it too: whether what the short one lacks is flowrun's.
W6=bench/pipelines/w6.yaml
only cpu && for case in "1000 $N_CPU" "1000 $((10 * N_CPU))" "20000 $N_CPU"; do
	read -r rounds n_cpu <<<"$case"
	CPU=$DIR/cpu-$n_cpu.txt
	seq 1 "$n_cpu" >"$CPU"
	SET=(--set "stages.sha.with.rounds=$rounds")
	declare -a t_c1=() t_c2=()
	for k in 1 2; do
		workers "$k" "$W6" "${SET[@]}"
		for ((r = 0; r < RUNS; r++)); do
			v=$(timed "cpu.$k" "$CPU" "${FLOW[@]}" "${BROKER[@]}" "${SET[@]}" "$W6")
			case $k in 1) t_c1+=("$v") ;; 2) t_c2+=("$v") ;; esac
		done
		stop_workers
	done
	same cpu.1 cpu.2
	m_c1=$(printf '%s\n' "${t_c1[@]}" | median)
	m_c2=$(printf '%s\n' "${t_c2[@]}" | median)
	sc=$(ratio "$m_c1" "$m_c2")
	row "sha256 x$rounds (W6), $n_cpu records, 1 worker process of 1 worker" "$m_c1 s" "" "" ""
	row "the same, 2 worker processes: speed-up over 1 (2 cores)" "$m_c2 s" "${sc}x" ">= 1.7x" "$(meets "$sc" ">=" 1.7)"
done

# --- latency: one record through two stages, pipe open ----------------------------

LAT=bench/pipelines/scaleout-latency.yaml
if only latency; then
workers 1 "$LAT"
read -r l50 l90 lmax < <("$BIN/latency" -n 40 -warmup 3 -- "${FLOW[@]}" "${BROKER[@]}" "$LAT")
stop_workers
row "one line through trim and upper on a worker, pipe open: median (p90, max) of 40" "$l50 ms" "($l90, $lmax ms)" "< 5 ms" "$(meets "$l50" "<" 5)"
fi

# --- worker memory against the length of the queue ---------------------------------

# The run fills the stream up to its window before the worker joins; the
# worker's peak RSS after a short and a ten times longer input.
declare -a mem
if only memory; then
for n in "$N_MEM_SMALL" "$N_MEM_LARGE"; do
	in=$(data lines "$n")
	"${FLOW[@]}" "${BROKER[@]}" "$W1" <"$in" >"$OUT/mem.$n" &
	runpid=$!
	sleep 1
	workers 1 "$W1"
	wait "$runpid"
	mem+=("$(hwm "${WORKERS[0]}")")
	stop_workers
done
mr=$(ratio "${mem[1]}" "${mem[0]}")
row "worker peak RSS, W1 on $N_MEM_SMALL lines queued" "$((mem[0] / 1024)) MiB" "" "" ""
row "the same on $N_MEM_LARGE lines queued: ratio" "$((mem[1] / 1024)) MiB" "${mr}x" "< 1.2x" "$(meets "$mr" "<" 1.2)"
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "Through \`flowrun broker\` on 127.0.0.1, $(nproc) cores, medians of $RUNS rounds (QUICK=$QUICK${FLOWRUN:+, $FLOWRUN}); load average $LOAD_START at the start, $LOAD_END at the end."
echo
echo "| measurement | time | result | target | met? |"
echo "|---|---:|---:|---|---|"
printf '%s\n' "${ROWS[@]}"
