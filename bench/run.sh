#!/usr/bin/env bash
# bench/run.sh builds flowrun, the hand-written baselines and the helpers,
# generates the workloads' data (cached), and runs each workload's flowrun
# pipeline alternately with its baseline (and peers: jq, mlr, GNU parallel)
# RUNS times, printing a Markdown table of medians.
#
#   bench/run.sh                 # the full suite, a few minutes
#   QUICK=1 bench/run.sh         # small sizes, a smoke test under a minute
#   RUNS=9 bench/run.sh          # more runs per measurement (default 5)
#   BENCH_DIR=/data bench/run.sh # where data and binaries go (default $TMPDIR/flowrun-bench)
#   ONLY="w3" bench/run.sh       # only these workloads (w1 w2 w3 w4 w5 w6 w8 w9 w10), as when
#                                # checking one change on a loaded machine
#
# Peers missing from the machine are installed with apt-get when possible,
# and skipped otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
RUNS=${RUNS:-5}
log() { printf '%s\n' "$*" >&2; }
ONLY=${ONLY:-}
# want W succeeds when workload W is to be run.
want() { [[ -z $ONLY || " $ONLY " == *" $1 "* ]]; }
log "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/flowrun-bench}
BIN=$DIR/bin
OUT=$DIR/out
mkdir -p "$BIN" "$OUT"

if [[ $QUICK == 1 ]]; then
	RUNS=${RUNS_QUICK:-3}
	N_W1=200000 N_W2=50000 N_W3=20000 N_W3PR=50 N_W4=150
	N_W5_SMALL=200000 N_W5_LARGE=2000000 N_W6=400 N_W9=200000 N_W10=500000
else
	N_W1=5000000 N_W2=1000000 N_W3=20000 N_W3PR=200 N_W4=1000
	N_W5_SMALL=1000000 N_W5_LARGE=10000000 N_W6=2000 N_W9=1000000 N_W10=5000000
fi

# --- build ------------------------------------------------------------------

log "building into $BIN"
go build -o "$BIN/flowrun" .
for b in gen timeit latency; do
	go build -o "$BIN/$b" "./bench/$b"
done
for w in w1 w2 w3 w4 w6 w9; do
	go build -o "$BIN/base-$w" "./bench/baseline/$w"
done

# --- data -------------------------------------------------------------------

# data KIND N prints the path of N generated records, generating them once.
data() {
	local f="$DIR/$1-$2-seed1.txt"
	if [[ ! -s $f ]]; then
		log "generating $f"
		"$BIN/gen" -kind "$1" -n "$2" -seed 1 >"$f.tmp"
		mv "$f.tmp" "$f"
	fi
	printf '%s\n' "$f"
}

# --- peers ------------------------------------------------------------------

# peer CMD PACKAGE succeeds when CMD is on the PATH, installing PACKAGE
# from Debian if it is not; a failed install skips that peer.
peer() {
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2 for the peer $1"
	if command -v apt-get >/dev/null 2>&1 &&
		{ apt-get install -y "$2" >/dev/null 2>&1 ||
			{ apt-get update >/dev/null 2>&1 && apt-get install -y "$2" >/dev/null 2>&1; }; }; then
		command -v "$1" >/dev/null 2>&1 && return 0
	fi
	log "skipping the peer $1: $2 is not installed and could not be"
	return 1
}
HAVE_JQ=0 HAVE_MLR=0 HAVE_PARALLEL=0
peer jq jq && HAVE_JQ=1
peer mlr miller && HAVE_MLR=1
peer parallel parallel && HAVE_PARALLEL=1

# --- measuring ----------------------------------------------------------------

FLOW=("$BIN/flowrun" run --progress none -q)

# median reads numbers, one a line, and prints their median.
median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# group NAME IN RUNS CMD_ARRAY... runs the commands (names of arrays)
# alternately, RUNS rounds, each with stdin from IN and stdout to a file in
# $OUT, and sets SECS[i] and RSS[i] (KiB) to each command's medians.
declare -a SECS RSS
group() {
	local name=$1 in=$2 runs=$3
	shift 3
	local -a cmds=("$@")
	local i r
	local -a times rsses
	for i in "${!cmds[@]}"; do
		times[i]=""
		rsses[i]=""
	done
	log "$name: ${#cmds[@]} commands x $runs runs"
	for ((r = 0; r < runs; r++)); do
		for i in "${!cmds[@]}"; do
			local -n cmd=${cmds[i]}
			local res
			res=$("$BIN/timeit" -in "$in" -out "$OUT/$name.$i" -- "${cmd[@]}")
			times[i]+="${res% *}"$'\n'
			rsses[i]+="${res#* }"$'\n'
			unset -n cmd
		done
	done
	SECS=() RSS=()
	for i in "${!cmds[@]}"; do
		SECS[i]=$(printf '%s' "${times[i]}" | median)
		RSS[i]=$(printf '%s' "${rsses[i]}" | median)
	done
}

# same NAME I J fails the suite when two commands of the last group wrote
# different output: a fast wrong answer is no benchmark.
same() {
	if ! cmp -s "$OUT/$1.$2" "$OUT/$1.$3"; then
		log "$1: outputs $2 and $3 differ (see $OUT/$1.$2 and $OUT/$1.$3)"
		exit 1
	fi
}

# lines NAME I prints how many lines command I of group NAME wrote.
lines() { wc -l <"$OUT/$1.$2" | tr -d ' '; }

# Table rows: "| workload | flowrun s | baseline s | records/s | ratio | target | met? |".
ROWS=()
# row NAME N FLOW_S BASE_S MAX_RATIO TARGET_TEXT; a MAX_RATIO of - judges
# nothing (the verdict is in the other table).
row() {
	local ratio met
	ratio=$(awk -v a="$3" -v b="$4" 'BEGIN { printf "%.2f", a / b }')
	met=-
	[[ $5 == - ]] || met=$(awk -v r="$ratio" -v m="$5" 'BEGIN { print (r <= m) ? "yes" : "**no**" }')
	ROWS+=("$(awk -v w="$1" -v n="$2" -v f="$3" -v b="$4" -v r="$ratio" -v t="$6" -v m="$met" \
		'BEGIN { printf "| %s | %.3f | %.3f | %.0f | %s | %s | %s |", w, f, b, n / f, r, t, m }')")
}
# Other measurements: "| measure | value | target | met? |".
OTHER=()
other() { OTHER+=("| $1 | $2 | $3 | $4 |"); }
check() { awk "BEGIN { print ($1) ? \"yes\" : \"**no**\" }"; }

# --- W1 and W7 ----------------------------------------------------------------

if want w1; then

W1=$(data lines "$N_W1")
flow_w1=("${FLOW[@]}" bench/pipelines/w1.yaml)
base_w1=("$BIN/base-w1")
flow_w7=("${FLOW[@]}" bench/pipelines/w7.yaml)
group w1 "$W1" "$RUNS" flow_w1 base_w1 flow_w7
same w1 0 1
same w1 0 2
row "W1 trim/upper/grep -v, $N_W1 lines" "$N_W1" "${SECS[0]}" "${SECS[1]}" 1.25 "<= 1.25"
W1_SECS=${SECS[0]} W7_SECS=${SECS[2]}
row "W7 W1 + 10 pass-through trim stages (vs W1 baseline)" "$N_W1" "${SECS[2]}" "${SECS[1]}" - "see W7 below"
r=$(awk -v a="$W7_SECS" -v b="$W1_SECS" 'BEGIN { printf "%.2f", a / b }')
other "W7 time / W1 time (flowrun, 10 extra trim stages)" "$r" "<= 1.3" "$(check "$r <= 1.3")"

# The cost of --metrics (issue 12): W1 with and without it, alternately.
# The counters are the runner's own either way; --metrics adds the HTTP
# server and a collector that reads them only when scraped.
flow_w1m=("${FLOW[@]}" --metrics 127.0.0.1:0 bench/pipelines/w1.yaml)
group w1m "$W1" "$RUNS" flow_w1 flow_w1m
same w1m 0 1
r=$(awk -v a="${SECS[1]}" -v b="${SECS[0]}" 'BEGIN { printf "%.3f", a / b }')
other "W1 time with --metrics / without (${SECS[1]}s / ${SECS[0]}s)" "$r" "<= 1.03" "$(check "$r <= 1.03")"

fi

# --- W2 -----------------------------------------------------------------------

if want w2; then

W2=$(data json "$N_W2")
flow_w2=("${FLOW[@]}" bench/pipelines/w2.yaml)
base_w2=("$BIN/base-w2")
peer_jq=(jq -c 'select(.active and .score > 50) | .name_upper = (.name | ascii_upcase)')
peer_mlr=(mlr --ijsonl --ojsonl filter '$active == true && $score > 50' then put '$name_upper = toupper($name)')
group w2 "$W2" "$RUNS" flow_w2 base_w2
same w2 0 1
row "W2 filter/map JSON, $N_W2 records, 2 workers" "$N_W2" "${SECS[0]}" "${SECS[1]}" 1.5 "<= 1.5"

# The peers are 3 to 10 times slower: they get a fifth of the records, and
# flowrun runs again beside them on the same.
N_PEER=$((N_W2 / 5))
W2P=$(data json "$N_PEER")
w2=(flow_w2)
((HAVE_JQ)) && w2+=(peer_jq)
((HAVE_MLR)) && w2+=(peer_mlr)
if ((${#w2[@]} > 1)); then
	group w2peers "$W2P" "$RUNS" "${w2[@]}"
	for ((i = 1; i < ${#w2[@]}; i++)); do
		# Peers format JSON their own way (mlr adds spaces): compare counts.
		[[ $(lines w2peers 0) == $(lines w2peers "$i") ]] || {
			log "w2: ${w2[i]} wrote $(lines w2peers "$i") records, flowrun $(lines w2peers 0)"
			exit 1
		}
		row "W2 vs peer ${w2[i]#peer_}, $N_PEER records (baseline column: the peer)" "$N_PEER" "${SECS[0]}" "${SECS[i]}" 1 "< 1 (faster than the peer)"
	done
fi

fi

# --- W3 -----------------------------------------------------------------------

if want w3; then

W3=$(data lines "$N_W3")
flow_w3=("${FLOW[@]}" bench/pipelines/w3.yaml)
base_w3=(mawk -W interactive '{print toupper($0); fflush()}')
base_w3pipe=("$BIN/base-w3")
flow_w3json=("${FLOW[@]}" bench/pipelines/w3-json.yaml)
group w3 "$W3" "$RUNS" flow_w3 base_w3 base_w3pipe flow_w3json
same w3 0 1
same w3 2 1
same w3 3 1
row "W3 exec stream through awk, $N_W3 lines (baseline: the same awk on the file)" "$N_W3" "${SECS[0]}" "${SECS[1]}" 2 "<= 2"
row "W3 the same, vs hand-written Go piping the file through that awk (baseline/w3)" "$N_W3" "${SECS[0]}" "${SECS[2]}" - "(what the pipe costs)"
row "W3 protocol json, the same awk answering JSON (baseline column: W3 on protocol lines)" "$N_W3" "${SECS[3]}" "${SECS[0]}" 1.3 "<= 1.3"

W3PR=$(data lines "$N_W3PR")
flow_w3pr=("${FLOW[@]}" bench/pipelines/w3-per-record.yaml)
if ((HAVE_PARALLEL)); then
	peer_parallel=(parallel -q -j2 -k --pipe -N1 mawk '{print toupper($0)}')
	# parallel pays milliseconds per record: three rounds are plenty.
	group w3pr "$W3PR" "$((RUNS < 3 ? RUNS : 3))" flow_w3pr peer_parallel
	same w3pr 0 1
	row "W3 exec per-record, $N_W3PR lines, 2 workers vs GNU parallel -j2 (baseline column: parallel)" \
		"$N_W3PR" "${SECS[0]}" "${SECS[1]}" 0.3334 "<= 0.33 (3x parallel's rate)"
fi

fi

# --- W4 -----------------------------------------------------------------------

if want w4; then

W4=$(data lines "$N_W4")
flow_w4=("${FLOW[@]}" bench/pipelines/w4.yaml)
base_w4=("$BIN/base-w4")
group w4 "$W4" "$RUNS" flow_w4 base_w4
bound=$(awk -v n="$N_W4" 'BEGIN { printf "%.3f", n / 3 * 0.010 }')
limit=$(awk -v b="$bound" 'BEGIN { printf "%.3f", b * 1.05 }')
row "W4 3 stages x 10 ms, 3/4/5 workers, $N_W4 items" "$N_W4" "${SECS[0]}" "${SECS[1]}" - "see W4 below"
r=$(awk -v a="${SECS[0]}" -v b="$bound" 'BEGIN { printf "%.3f", a / b }')
other "W4 flowrun time / bound ($bound s = $N_W4/3 x 10 ms)" "$r" "<= 1.05" "$(check "$r <= 1.05")"

fi

# --- W5 -----------------------------------------------------------------------

if want w5; then

W5S=$(data lines "$N_W5_SMALL")
W5L=$(data lines "$N_W5_LARGE")
flow_w5=("${FLOW[@]}" bench/pipelines/w5.yaml)
W5_RUNS=$((RUNS < 3 ? RUNS : 3))
group w5small "$W5S" "$W5_RUNS" flow_w5
rss_small=${RSS[0]}
group w5large "$W5L" "$W5_RUNS" flow_w5
rss_large=${RSS[0]}
r=$(awk -v a="$rss_large" -v b="$rss_small" 'BEGIN { printf "%.2f", a / b }')
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
other "W5 peak RSS, $N_W5_SMALL lines / $N_W5_LARGE lines" "$(mib "$rss_small") MiB / $(mib "$rss_large") MiB (x$r)" \
	"<= 1.1x and < 64 MiB" "$(check "$r <= 1.1 && $rss_large < 65536")"

fi

# --- W6 -----------------------------------------------------------------------

if want w6; then

W6=$(data lines "$N_W6")
flow_w6a=("${FLOW[@]}" --set stages.sha.workers=1 bench/pipelines/w6.yaml)
flow_w6b=("${FLOW[@]}" --set stages.sha.workers=2 bench/pipelines/w6.yaml)
base_w6a=("$BIN/base-w6" -workers 1)
base_w6b=("$BIN/base-w6" -workers 2)
group w6 "$W6" "$RUNS" flow_w6a flow_w6b base_w6a base_w6b
same w6 0 2
same w6 1 2
row "W6 sha256 x1000, $N_W6 records, 1 worker" "$N_W6" "${SECS[0]}" "${SECS[2]}" - "see W6 below"
row "W6 sha256 x1000, $N_W6 records, 2 workers" "$N_W6" "${SECS[1]}" "${SECS[3]}" - "see W6 below"
r=$(awk -v a="${SECS[0]}" -v b="${SECS[1]}" 'BEGIN { printf "%.2f", a / b }')
rb=$(awk -v a="${SECS[2]}" -v b="${SECS[3]}" 'BEGIN { printf "%.2f", a / b }')
other "W6 speed-up 1 -> 2 workers (flowrun hash rounds 1000; the Go baseline's: x$rb)" "x$r" ">= 1.8" "$(check "$r >= 1.8")"

fi

# --- W9 and W10: aggregate and sort -------------------------------------------

if want w9; then

W9=$(data json "$N_W9")
flow_w9=("${FLOW[@]}" bench/pipelines/w9.yaml)
base_w9=("$BIN/base-w9")
w9=(flow_w9 base_w9)
peer_mlr_count=(mlr --ijsonl --ojsonl count -g name)
((HAVE_MLR)) && w9+=(peer_mlr_count)
group w9 "$W9" "$RUNS" "${w9[@]}"
same w9 0 1
row "W9 aggregate count by name (10k groups), $N_W9 JSON records" "$N_W9" "${SECS[0]}" "${SECS[1]}" 1.5 "<= 1.5"
if ((HAVE_MLR)); then
	[[ $(lines w9 0) == $(lines w9 2) ]] || {
		log "w9: mlr wrote $(lines w9 2) groups, flowrun $(lines w9 0)"
		exit 1
	}
	row "W9 vs mlr count -g name (baseline column: mlr)" "$N_W9" "${SECS[0]}" "${SECS[2]}" 0.2 "<= 0.2 (5x faster)"
fi

fi

if want w10; then

declare -F mib >/dev/null || mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
W10=$(data random "$N_W10")
flow_w10=("${FLOW[@]}" bench/pipelines/w10.yaml)
flow_w10m=("${FLOW[@]}" bench/pipelines/w10-64.yaml)
gnu_sort=(env LC_ALL=C sort)
group w10 "$W10" "$RUNS" flow_w10 gnu_sort flow_w10m
same w10 0 1
same w10 2 1
row "W10 sort, $N_W10 lines (baseline: LC_ALL=C sort, both cores)" "$N_W10" "${SECS[0]}" "${SECS[1]}" 1.5 "<= 1.5"
row "W10 sort with max_memory 64MiB, spilled (baseline: LC_ALL=C sort)" "$N_W10" "${SECS[2]}" "${SECS[1]}" - "(RSS below)"
# The collector lets the heap reach 3x what is live (GOGC=200), and the
# runner's buffers come on top: 2.5x max_memory is the bound.
other "W10 peak RSS: sort max_memory 256MiB / 64MiB; GNU sort" "$(mib "${RSS[0]}") MiB / $(mib "${RSS[2]}") MiB; $(mib "${RSS[1]}") MiB" \
	"64MiB run < 160 MiB" "$(check "${RSS[2]} < 160 * 1024")"

fi

# --- W8 and streaming latency ---------------------------------------------------

if want w8; then

flow_w8=("${FLOW[@]}" bench/pipelines/w8.yaml)
group w8 /dev/null 20 flow_w8
ms=$(awk -v s="${SECS[0]}" 'BEGIN { printf "%.1f", s * 1000 }')
other "W8 startup to exit on empty input, median of 20" "$ms ms" "<= 15 ms" "$(check "$ms <= 15")"

read -r lat50 lat90 latmax < <("$BIN/latency" -n 20 -- "${FLOW[@]}" bench/pipelines/w1.yaml)
other "Streaming latency, one line in to out, pipe open (W1), 20 lines" \
	"median $lat50 ms, p90 $lat90 ms, max $latmax ms" "< 10 ms" "$(check "$lat90 < 10")"

fi

# --- the tables -------------------------------------------------------------------

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
# Other processes on the machine skew every number: the load says how much.
load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "flowrun benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores, $cpu, $(go version | awk '{ print $3 }'), median of $RUNS runs, load average at the end $load$( ((QUICK)) && echo ', QUICK sizes')"
echo
echo "| workload | flowrun median s | baseline median s | records/s flowrun | ratio flowrun/baseline | target | met? |"
echo "|---|---:|---:|---:|---:|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "| measure | value | target | met? |"
echo "|---|---|---|---|"
printf '%s\n' "${OTHER[@]}"
