#!/usr/bin/env bash
# bench/run.sh — orch against make, go-task and Snakemake on one synthetic
# layered DAG (bench/gen), side by side in one sitting.
#
#   bash bench/run.sh                 # N=1000, all tools
#   N=5000 TOOLS="make orch" bash bench/run.sh
#
# Scenarios, each tool on its own fresh copy of the generated workspace:
#   full    first full run at -j $JOBS
#   noop    rerun with nothing changed
#   dry     dry run / plan with nothing changed (make -n, task --dry,
#           snakemake -n, orch plan)
#   change  rerun after changing inputs/in1.txt (a first-layer input)
# Checks: every tool's outputs agree with make's after the full run; after the
# change, `orch plan` (before running) reports as MISS/WAIT exactly the
# stages below inputs/in1.txt, and the rerun runs exactly those.
#
# Environment: N (1000), TOOLS ("make task snakemake orch"), JOBS (2),
# RUNS_FAST (5: noop, dry), RUNS_FULL (3 for N<=1000, else 1: full, change),
# WORK (/tmp/orch-bench), TOOL_TIMEOUT (seconds per command, 3600),
# ORCH_BIN (a prebuilt orch to measure instead of building the work tree;
# ORCH_VERSION labels it),
# INSTALL (1: install missing peers), HYPERFINE (auto|0), PAIRS (3 for
# N<=1000, else 1: extra first runs of make and orch taken alternately, so
# that their ratio is measured under the same load; 0 skips them).
# Results: a Markdown table on stdout and in $WORK/N$N/results.md.
set -euo pipefail

N=${N:-1000}
TOOLS=${TOOLS:-"make task snakemake orch"}
JOBS=${JOBS:-2}
RUNS_FAST=${RUNS_FAST:-5}
if [ "$N" -le 1000 ]; then RUNS_FULL=${RUNS_FULL:-3} PAIRS=${PAIRS:-3}; else RUNS_FULL=${RUNS_FULL:-1} PAIRS=${PAIRS:-1}; fi
WORK=${WORK:-/tmp/orch-bench}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-3600}
INSTALL=${INSTALL:-1}
HYPERFINE=${HYPERFINE:-auto}
TASK_VERSION=v3.53.1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
say() { printf '== %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------
if [ -n "${ORCH_BIN:-}" ]; then
	ORCH=$(cd "$(dirname "$ORCH_BIN")" && pwd)/$(basename "$ORCH_BIN")
	say "using $ORCH"
else
	say "building orch"
	go build -o bin/orch ./cmd/orchestrator
	ORCH=$REPO/bin/orch
fi

apt_install() { # apt_install PKG: best effort
	[ "$INSTALL" = 1 ] || return 1
	command -v apt-get >/dev/null || return 1
	apt-get install -y "$1" >/dev/null 2>&1 && return 0
	apt-get update >/dev/null 2>&1 && apt-get install -y "$1" >/dev/null 2>&1
}

has_tool() { case " $TOOLS " in *" $1 "*) return 0 ;; esac; return 1; }
drop_tool() { TOOLS=$(echo " $TOOLS " | sed "s/ $1 / /" | xargs); }

TASK=$(go env GOPATH)/bin/task
if has_tool task; then
	if ! "$TASK" --version 2>/dev/null | grep -q "${TASK_VERSION#v}"; then
		if [ "$INSTALL" = 1 ]; then
			say "installing go-task $TASK_VERSION"
			go install "github.com/go-task/task/v3/cmd/task@$TASK_VERSION"
		fi
	fi
	if ! "$TASK" --version >/dev/null 2>&1; then
		say "go-task unavailable: skipped"
		drop_tool task
	fi
fi
if has_tool snakemake && ! command -v snakemake >/dev/null; then
	say "installing snakemake (apt)"
	if ! apt_install snakemake || ! command -v snakemake >/dev/null; then
		say "snakemake unavailable (apt-get install failed): skipped"
		drop_tool snakemake
	fi
fi
if has_tool make && ! command -v make >/dev/null; then
	apt_install make || { say "make unavailable: it is the baseline"; exit 1; }
fi
if [ "$HYPERFINE" = auto ]; then
	command -v hyperfine >/dev/null || apt_install hyperfine || true
	if command -v hyperfine >/dev/null; then HYPERFINE=1; else HYPERFINE=0; fi
fi

# --- commands per tool -------------------------------------------------------
# cmd TOOL SCENARIO prints the command to run inside the workspace.
cmd() {
	case "$1:$2" in
	make:full | make:noop | make:change) echo "make -j$JOBS" ;;
	make:dry) echo "make -n" ;;
	task:full | task:noop | task:change) echo "$TASK --concurrency $JOBS" ;;
	task:dry) echo "$TASK --dry" ;;
	snakemake:full | snakemake:noop | snakemake:change) echo "snakemake --cores $JOBS" ;;
	snakemake:dry) echo "snakemake -n" ;;
	orch:full | orch:noop | orch:change) echo "$ORCH run -j $JOBS orch.yaml" ;;
	orch:dry) echo "$ORCH plan orch.yaml" ;;
	esac
}

version() {
	case "$1" in
	make) make --version | head -1 ;;
	task) echo "go-task $("$TASK" --version | awk '{print $NF}')" ;;
	snakemake) echo "snakemake $(snakemake --version)" ;;
	orch) echo "orch ${ORCH_VERSION:-$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')}" ;;
	esac
}

# --- timing ------------------------------------------------------------------
# measure TOOL SCENARIO RUNS WARMUP PREPARE: runs the scenario's command in
# $WORK/N$N/TOOL and records "TOOL SCENARIO MEDIAN_S CPU_S" (or FAIL) in $RES.
# PREPARE is a sh command run before each timed run (and each warmup).
# settle FILE...: write back, then drop the clean page cache (root, SETTLE=1,
# the default): ext4 without a journal checks every free inode it passes
# when it makes a file for a deletion in the last minute or more, but only
# while that inode's table block is cached (recently_deleted in
# fs/ext4/ialloc.c), so after a drop, earlier deletions (this script's, or
# a build's) no longer slow the timed runs. Then run each COMMAND once
# (binaries and their libraries back in the cache), so the runs do not
# start cold. Does nothing where /proc/sys/vm/drop_caches is not writable.
settle() {
	sync
	if [ "${SETTLE:-1}" = 1 ] && [ -w /proc/sys/vm/drop_caches ] && echo 1 2>/dev/null >/proc/sys/vm/drop_caches; then
		say "settled: wrote back and dropped the page cache (SETTLE=0 skips this)"
		local c
		for c in "$@"; do sh -c "$c" </dev/null >/dev/null 2>&1 || true; done
	fi
	return 0
}

measure() {
	local tool=$1 sc=$2 runs=$3 warm=$4 prep=$5
	local ws=$DIR/$tool log=$DIR/$tool.$sc.log c
	c="cd $ws && timeout $TOOL_TIMEOUT $(cmd "$tool" "$sc")"
	say "$tool $sc: $(cmd "$tool" "$sc") (runs $runs)"
	if [ "$HYPERFINE" = 1 ]; then
		local csv=$DIR/$tool.$sc.csv
		local args=(--runs "$runs" --warmup "$warm" --export-csv "$csv" --output "$log" --style none)
		[ -n "$prep" ] && args+=(--prepare "$prep")
		if hyperfine "${args[@]}" "$c" >/dev/null 2>"$DIR/$tool.$sc.err"; then
			# command,mean,stddev,median,user,system,min,max
			awk -F, -v t="$tool" -v s="$sc" 'NR==2 {printf "%s %s %.6f %.6f\n", t, s, $4, $5+$6}' "$csv" >>"$RES"
			return 0
		fi
	else
		local i t0 t1 times=() ok=1
		for ((i = 0; i < warm + runs; i++)); do
			[ -n "$prep" ] && sh -c "$prep"
			t0=$(date +%s%N)
			if ! sh -c "$c" >"$log" 2>&1; then ok=0; break; fi
			t1=$(date +%s%N)
			((i >= warm)) && times+=($(((t1 - t0) / 1000)))
		done
		if [ "$ok" = 1 ]; then
			printf '%s\n' "${times[@]}" | sort -n | awk -v t="$tool" -v s="$sc" \
				'{a[NR]=$1} END {printf "%s %s %.6f -\n", t, s, a[int((NR+1)/2)]/1e6}' >>"$RES"
			return 0
		fi
	fi
	say "$tool $sc FAILED (see $log)"
	echo "$tool $sc FAIL -" >>"$RES"
	return 1
}

check() { # check NAME OK DETAIL
	local r=FAIL
	[ "$2" = 1 ] && r=PASS
	echo "$r|$1|$3" >>"$CHECKS"
	say "$r: $1 ($3)"
}

# outputs TOOL prints the digest of all stage outputs in stage order.
outputs() {
	local ws=$DIR/$1
	case $1 in
	orch) sed "s|.*|$ws/.orch/out/bench/&/out|" "$DIR/stages.txt" ;;
	*) sed "s|.*|$ws/out/&.txt|" "$DIR/stages.txt" ;;
	esac | xargs cat 2>&1 | sha1sum | cut -c1-12
}

# --- the benchmark -------------------------------------------------------------
DIR=$WORK/N$N
RES=$DIR/times.txt
CHECKS=$DIR/checks.txt
chmod -R u+w "$DIR" 2>/dev/null || true
rm -rf "$DIR"
mkdir -p "$DIR"
: >"$RES"
: >"$CHECKS"
say "generating N=$N into $DIR/fresh"
go run ./bench/gen -n "$N" -out "$DIR/fresh"
go run ./bench/gen -n "$N" -descendants-of 1 >"$DIR/expected-in1.txt"
go run ./bench/gen -n "$N" -list >"$DIR/stages.txt"
NEXP=$(wc -l <"$DIR/expected-in1.txt")

# The deletions above (the last sitting's files) would slow file creation
# for minutes (below, at TRASH): settle makes them harmless before timing.
settle "$ORCH --help" "make --version" "task --version" "snakemake --version" \
	"cat /dev/null | sha1sum" "tar -cf - -C $DIR/fresh ."

# Old workspaces are moved aside and deleted only at the end: on this VM's
# ext4 (no journal), every file created within about 30 s of an unlink skips
# the unlinked inodes one by one in the inode allocator (recently_deleted in
# fs/ext4/ialloc.c). An `rm -rf` of the last run's thousands of files right
# before a run slowed whichever tool creates more files (orch: records, blobs,
# .orch/out links) by up to 2x, and its own next runs more each time.
TRASH=$DIR/trash
mkdir -p "$TRASH"
aside() { [ ! -e "$1" ] || mv "$1" "$TRASH/$(basename "$1").$(date +%s%N)"; }

for tool in $TOOLS; do
	ws=$DIR/$tool
	reset="{ [ ! -e $ws ] || mv $ws $TRASH/$tool.\$(date +%s%N); } && cp -a $DIR/fresh $ws && sync"
	change="echo \"change \$(date +%s%N)\" >> $ws/inputs/in1.txt"
	sh -c "$reset"
	if ! measure "$tool" full "$RUNS_FULL" 0 "$reset"; then
		for sc in noop dry change; do echo "$tool $sc SKIP -" >>"$RES"; done
		continue
	fi
	sum=$(outputs "$tool")
	[ "$tool" = make ] && ref=$sum
	if [ "$tool" != make ] && [ -n "${ref:-}" ]; then
		check "$tool outputs agree with make's after the full run" "$([ "$sum" = "$ref" ] && echo 1)" "$sum vs $ref"
	fi
	measure "$tool" noop "$RUNS_FAST" 1 "" || true
	if [ "$tool" = orch ]; then
		ran=$(grep -o '[0-9]* ran' "$DIR/orch.noop.log" | tail -1 || true)
		check "orch no-op rerun runs nothing" "$([ "$ran" = "0 ran" ] && echo 1)" "$ran"
	fi
	measure "$tool" dry "$RUNS_FAST" 1 "" || true
	if [ "$tool" = orch ]; then
		sh -c "$change"
		(cd "$ws" && "$ORCH" plan orch.yaml >"$DIR/orch.plan-after-change.txt") || true
		awk '$1 == "MISS" || $1 == "WAIT" {print $2}' "$DIR/orch.plan-after-change.txt" | sort >"$DIR/orch.plan-misswait.txt"
		sort "$DIR/expected-in1.txt" >"$DIR/expected-sorted.txt"
		got=$(wc -l <"$DIR/orch.plan-misswait.txt")
		extra=$(comm -13 "$DIR/expected-sorted.txt" "$DIR/orch.plan-misswait.txt" | wc -l)
		missing=$(comm -23 "$DIR/expected-sorted.txt" "$DIR/orch.plan-misswait.txt" | wc -l)
		check "orch plan after changing inputs/in1.txt reports exactly its descendants as MISS/WAIT" \
			"$([ "$extra" = 0 ] && [ "$missing" = 0 ] && echo 1)" \
			"expected $NEXP, got $got: $missing missing, $extra extra; $(tail -1 "$DIR/orch.plan-after-change.txt")"
	fi
	measure "$tool" change "$RUNS_FULL" 0 "$change" || true
	if [ "$tool" = orch ]; then
		ran=$(grep -o '[0-9]* ran' "$DIR/orch.change.log" | tail -1 || true)
		check "orch rerun after the change runs exactly the $NEXP descendants" "$([ "$ran" = "$NEXP ran" ] && echo 1)" "$ran"
	fi
done

# --- make and orch alternately -------------------------------------------------
# The machine may be shared: load that comes and goes between the tools' turns
# skews the table above. Here each pair of first runs is taken back to back.
: >"$DIR/pairs.txt"
if has_tool make && has_tool orch && [ "$PAIRS" -gt 0 ]; then
	for ((i = 1; i <= PAIRS; i++)); do
		line=""
		for tool in make orch; do
			ws=$DIR/pair-$tool
			aside "$ws" && cp -a "$DIR/fresh" "$ws" && sync
			t0=$(date +%s%N)
			(cd "$ws" && timeout "$TOOL_TIMEOUT" sh -c "$(cmd "$tool" full)" >"$DIR/pair-$tool.log" 2>&1) || t0=FAIL
			t1=$(date +%s%N)
			[ "$t0" = FAIL ] && line="$line FAIL" || line="$line $(((t1 - t0) / 1000))"
		done
		echo "${line# }" >>"$DIR/pairs.txt"
		say "pair $i: make, orch (µs): $line"
	done
fi

chmod -R u+w "$TRASH" 2>/dev/null || true
rm -rf "$TRASH"

# --- report --------------------------------------------------------------------
fmt_s() { # seconds -> "12 ms" / "3.80 s"
	awk -v t="$1" 'BEGIN { if (t !~ /^[0-9.]+$/) print t; else if (t < 1) printf "%.0f ms", t*1000; else printf "%.2f s", t }'
}
get() { awk -v t="$1" -v s="$2" -v f="$3" '$1==t && $2==s {print $f}' "$RES" | tail -1; }

{
	echo "N=$N stages (layers of 10), -j $JOBS, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "Median wall time; runs: full/change $RUNS_FULL, noop/dry $RUNS_FAST; timer: $([ "$HYPERFINE" = 1 ] && hyperfine --version || echo 'shell loop')"
	echo
	for tool in $TOOLS; do echo "- $(version "$tool")"; done
	echo
	printf '| scenario |'
	for tool in $TOOLS; do printf ' %s |' "$tool"; done
	printf '\n|---|'
	for tool in $TOOLS; do printf -- '---|'; done
	printf '\n'
	for sc in full noop dry change; do
		case $sc in
		full) label="first full run" ;;
		noop) label="no-op rerun" ;;
		dry) label="dry run / plan" ;;
		change) label="rerun after changing in1 ($NEXP stages)" ;;
		esac
		printf '| %s |' "$label"
		base=$(get make "$sc" 3)
		for tool in $TOOLS; do
			t=$(get "$tool" "$sc" 3)
			cell=$(fmt_s "${t:-n/a}")
			if [[ "$t" =~ ^[0-9.]+$ && "$base" =~ ^[0-9.]+$ ]]; then
				cell="$cell ($(awk -v a="$t" -v b="$base" 'BEGIN {printf "%.2fx", a/b}'))"
			fi
			printf ' %s |' "$cell"
		done
		printf '\n'
	done
	if [ "$HYPERFINE" = 1 ]; then
		echo
		echo "CPU time (user+system, mean):"
		echo
		printf '| scenario |'
		for tool in $TOOLS; do printf ' %s |' "$tool"; done
		printf '\n|---|'
		for tool in $TOOLS; do printf -- '---|'; done
		printf '\n'
		for sc in full noop dry change; do
			printf '| %s |' "$sc"
			for tool in $TOOLS; do printf ' %s |' "$(fmt_s "$(get "$tool" "$sc" 4)")"; done
			printf '\n'
		done
	fi
	if [ -s "$DIR/pairs.txt" ]; then
		echo
		echo "First runs taken alternately (make, orch; ratio):"
		echo
		awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ {printf "- %.2f s, %.2f s: %.2fx\n", $1/1e6, $2/1e6, $2/$1}' "$DIR/pairs.txt"
	fi
	echo
	echo "Checks:"
	echo
	while IFS='|' read -r r name detail; do echo "- $r: $name ($detail)"; done <"$CHECKS"
	if has_tool orch; then
		echo
		echo "Targets (issue 2):"
		echo
		target() { # target NAME OK VALUE
			local r=FAIL
			[ "$2" = 1 ] && r=PASS
			echo "- $r: $1 — $3"
		}
		of=$(get orch full 3) mf=$(get make full 3) od=$(get orch dry 3) on=$(get orch noop 3)
		num() { [[ "$1" =~ ^[0-9.]+$ ]]; }
		if num "$of" && num "$mf"; then
			pr=$(awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ {print $2/$1}' "$DIR/pairs.txt" | sort -n | awk '{a[NR]=$1} END {if (NR) printf "%.2f", a[int((NR+1)/2)]}')
			target "first run within 1.2x of make" "$(awk -v a="$of" -v b="$mf" 'BEGIN {print (a <= 1.2*b)}')" \
				"$(awk -v a="$of" -v b="$mf" 'BEGIN {printf "%.2fx", a/b}') in the table${pr:+, median ${pr}x over the alternate pairs}"
		fi
		if num "$od"; then
			target "orch plan, all cached, under 50 ms (target set at N=1000)" "$(awk -v a="$od" 'BEGIN {print (a < 0.05)}')" "$(fmt_s "$od")"
		fi
		if num "$on"; then
			target "no-op orch run under 100 ms (target set at N=1000)" "$(awk -v a="$on" 'BEGIN {print (a < 0.1)}')" "$(fmt_s "$on")"
		fi
		target "N=$N works (full run)" "$(num "$of" && echo 1)" "$(fmt_s "${of:-n/a}")"
		ok=$(grep -c '^PASS|orch plan after changing' "$CHECKS" || true)
		target "plan after one leaf change reports exactly the affected stages" "$ok" "see checks"
	fi
} | tee "$DIR/results.md"
