#!/usr/bin/env bash
# bench/slurm/run.sh — per-stage overhead of orch's Slurm executor, in one
# sitting, on a chain of N trivial stages (each reads its predecessor's
# output and appends a line):
#
#   orch-local   orch run --executor local            (the floor: no Slurm)
#   orch-slurm   orch run, every stage a Slurm job    (sbatch, squeue, worker)
#   sbatch-chain the same N jobs submitted by a shell loop with
#                sbatch --dependency=afterok:PREV, waited for with scontrol
#
#   bash bench/slurm/run.sh            # N=100, ROUNDS=2
#   N=20 ROUNDS=1 bash bench/slurm/run.sh
#
# Rounds alternate the three, so that their ratios are taken under the same
# load. Wall time is from the first command to the last stage's output;
# CPU is user+system of the submitting side (orch, or the shell loop with
# its sbatch/scontrol children), not of the jobs. Uses the cluster named by
# SLURM_CONF, or starts one with scripts/slurm.sh (and stops it after).
# Environment: N (100), ROUNDS (2), POLL (orch's slurm.poll, 500ms),
# WORK (/tmp/orch-bench-slurm; must be visible to the compute nodes).
set -euo pipefail

N=${N:-100}
ROUNDS=${ROUNDS:-2}
POLL=${POLL:-500ms}
WORK=${WORK:-/tmp/orch-bench-slurm}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

rm -rf "$WORK"
mkdir -p "$WORK"
if [ -z "${SLURM_CONF:-}" ]; then
	eval "$("$REPO/scripts/slurm.sh" start "$WORK/cluster")"
	trap '"$REPO/scripts/slurm.sh" stop "$WORK/cluster"' EXIT
fi
(cd "$REPO" && go build -o "$WORK/orch" ./cmd/orchestrator)
ORCH=$WORK/orch

# The pipeline: s1 → s2 → ... → sN.
gen() {
	echo "name: chain"
	echo "executor: slurm"
	echo "slurm: {poll: $POLL}"
	echo "stages:"
	echo "  s1:"
	echo "    outputs: {out: o.txt}"
	echo "    run: echo 1 > {{outputs.out}}"
	for i in $(seq 2 "$N"); do
		echo "  s$i:"
		echo "    inputs: {x: s$((i - 1)).out}"
		echo "    outputs: {out: o.txt}"
		echo "    run: cat {{inputs.x}} > {{outputs.out}} && echo $i >> {{outputs.out}}"
	done
}
gen >"$WORK/chain.yaml"

TIMEFORMAT='%R %U %S'

orch_run() { # orch_run EXECUTOR: prints "wall cpu"
	local ws=$WORK/ws-$1 t
	rm -rf "$ws"
	mkdir -p "$ws"
	cp "$WORK/chain.yaml" "$ws/"
	t=$({ time (cd "$ws" && "$ORCH" run --executor "$1" chain.yaml >"$ws/run.log" 2>&1); } 2>&1)
	grep -q "chain: 0 cached, $N ran, 0 failed" "$ws/run.log" || { cat "$ws/run.log" >&2; echo "orch $1 failed" >&2; exit 1; }
	[ "$(wc -l <"$ws/.orch/out/chain/s$N/out")" = "$N" ] || { echo "orch $1: wrong output" >&2; exit 1; }
	awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' <<<"$t"
}

chain_body() {
	local dir=$1 prev="" id i last
	for i in $(seq 1 "$N"); do
		if [ "$i" = 1 ]; then
			id=$(sbatch --parsable --no-requeue --chdir="$dir" --output=/dev/null --job-name=chain --wrap "echo 1 > o1.txt")
		else
			id=$(sbatch --parsable --no-requeue --chdir="$dir" --output=/dev/null --job-name=chain \
				--dependency="afterok:$prev" --wrap "cat o$((i - 1)).txt > o$i.txt && echo $i >> o$i.txt")
		fi
		prev=$id
	done
	last=$prev
	while :; do
		case $(scontrol show job -o "$last" | grep -o 'JobState=[A-Z_]*') in
		JobState=COMPLETED) break ;;
		JobState=PENDING | JobState=RUNNING | JobState=CONFIGURING | JobState=COMPLETING) sleep 0.1 ;;
		*) echo "sbatch chain: job $last did not complete" >&2; exit 1 ;;
		esac
	done
}

sbatch_chain() { # prints "wall cpu"
	local dir=$WORK/ws-sbatch t
	rm -rf "$dir"
	mkdir -p "$dir"
	t=$({ time chain_body "$dir"; } 2>&1)
	[ "$(wc -l <"$dir/o$N.txt")" = "$N" ] || { echo "sbatch chain: wrong output" >&2; exit 1; }
	awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' <<<"$t"
}

declare -A wall cpu
for r in $(seq 1 "$ROUNDS"); do
	for tool in orch-local orch-slurm sbatch-chain; do
		case $tool in
		orch-local) res=$(orch_run local) ;;
		orch-slurm) res=$(orch_run slurm) ;;
		sbatch-chain) res=$(sbatch_chain) ;;
		esac
		read -r w c <<<"$res"
		wall[$tool]="${wall[$tool]:-} $w"
		cpu[$tool]="${cpu[$tool]:-} $c"
		echo "round $r: $tool wall ${w}s cpu ${c}s" >&2
	done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
chain_w=$(median <<<"${wall[sbatch-chain]}")
local_w=$(median <<<"${wall[orch-local]}")
echo
echo "N=$N stages in a chain, $ROUNDS rounds (median), slurm.poll=$POLL, $(sinfo -h -o '%c CPUs' | head -1) on one node"
echo
echo "| | wall (s) | per stage (ms) | submitting-side CPU (s) | wall / sbatch chain | wall / orch local |"
echo "|---|---:|---:|---:|---:|---:|"
for tool in orch-local orch-slurm sbatch-chain; do
	w=$(median <<<"${wall[$tool]}")
	c=$(median <<<"${cpu[$tool]}")
	awk -v t="$tool" -v w="$w" -v c="$c" -v n="$N" -v cw="$chain_w" -v lw="$local_w" \
		'BEGIN { printf "| %s | %.2f | %.0f | %.2f | %.2f | %.1f |\n", t, w, w * 1000 / n, c, w / cw, w / lw }'
done
echo
echo "raw wall:$(for t in orch-local orch-slurm sbatch-chain; do printf ' %s [%s ]' "$t" "${wall[$t]}"; done)"
