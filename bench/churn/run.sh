#!/usr/bin/env bash
# bench/churn/run.sh — orch's churn pipeline on a 3M-row CSV against the
# reference pipelines in ../shared/baselines (pandas + scikit-learn; Polars
# and DuckDB for Node), side by side in one sitting, each command under
# /usr/bin/time -v (wall, user + system CPU, peak RSS), in alternating order.
#
#   bash bench/churn/run.sh            # 3 rounds
#   RUNS=5 bash bench/churn/run.sh
#
# Per round, each in a fresh workspace (cold cache), in a rotating order:
#   orch-full   orch run pipelines/churn-csv.yaml -p csv=CSV   (all six stages)
#   orch-ipf    the same run limited to `features`: ingest + preprocess +
#               features, each writing Parquet (the work the peers do)
#   pandas      churn_pipeline.py: read, preprocess, features, logistic
#               regression (lbfgs), AUC, write (a pickle: Debian has no pyarrow)
#   polars      polars_churn.mjs MODE=fused (its fastest form), Parquet out
#   duckdb      duckdb_churn.mjs MODE=fused, Parquet out
# Then, in the last orch-full workspace: a rerun with nothing changed (must
# be all HIT) and a rerun after a train param edit (-p l2=0.5: must run
# train, validate and deploy only).
#
# Installs what is missing: Debian's python3-numpy python3-pandas
# python3-sklearn (apt), nodejs and npm when there is no node at all (the
# machine image ships Node 20, which the baselines' package.json asks for),
# and the peers' npm packages (npm install with the baselines' package.json,
# in $WORK/peers). Generates the CSV with gen_churn.py once (ROWS rows) and
# builds orch from this work tree.
#
# Environment: RUNS (3), ROWS (3000000), WORK (/tmp/orch-churn-bench),
# BASELINES (../shared/baselines beside the repository), TOOLS ("orch-full
# orch-ipf pandas polars duckdb"), ORCH_BIN (a prebuilt orch to measure).
# Results: a Markdown table on stdout and in $WORK/results.md; raw
# /usr/bin/time and tool outputs in $WORK/logs.
set -euo pipefail

RUNS=${RUNS:-3}
ROWS=${ROWS:-3000000}
WORK=${WORK:-/tmp/orch-churn-bench}
TOOLS=${TOOLS:-"orch-full orch-ipf pandas polars duckdb"}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${BASELINES:-}" ]; then
	for d in "$REPO/../shared/baselines" "$REPO/../../shared/baselines" /work/shared/baselines; do
		if [ -f "$d/churn_pipeline.py" ]; then BASELINES=$(cd "$d" && pwd); break; fi
	done
fi
if [ ! -f "${BASELINES:-}/churn_pipeline.py" ]; then
	echo "bench/churn: set BASELINES to the directory holding churn_pipeline.py" >&2
	exit 3
fi
PY=/usr/bin/python3 # Debian's, where apt installs pandas (a pyenv python3 may come first on PATH)
mkdir -p "$WORK/logs"

# --- install -------------------------------------------------------------
apt_install() {
	apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! $PY -c 'import numpy, pandas, sklearn' 2>/dev/null; then
	echo "bench/churn: installing python3-numpy python3-pandas python3-sklearn" >&2
	apt_install python3 python3-numpy python3-pandas python3-sklearn
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "bench/churn: installing nodejs npm" >&2
	apt_install nodejs npm
fi
[ -x /usr/bin/time ] || apt_install time
mkdir -p "$WORK/peers"
cp "$BASELINES/package.json" "$BASELINES/polars_churn.mjs" "$BASELINES/duckdb_churn.mjs" "$WORK/peers/"
if ! (cd "$WORK/peers" && node -e 'require.resolve("nodejs-polars"); require.resolve("@duckdb/node-api")' 2>/dev/null) ||
	! cmp -s "$BASELINES/package.json" "$WORK/peers/.installed-package.json"; then
	echo "bench/churn: npm install (nodejs-polars, @duckdb/node-api)" >&2
	(cd "$WORK/peers" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
	cp "$BASELINES/package.json" "$WORK/peers/.installed-package.json"
fi

# --- data and binary -----------------------------------------------------
CSV=$WORK/churn-$ROWS.csv
if [ ! -s "$CSV" ]; then
	echo "bench/churn: generating $CSV" >&2
	$PY "$BASELINES/gen_churn.py" "$CSV.tmp" "$ROWS" >&2
	mv "$CSV.tmp" "$CSV"
fi
if [ -z "${ORCH_BIN:-}" ]; then
	ORCH_BIN=$WORK/orch
	(cd "$REPO" && go build -o "$ORCH_BIN" ./cmd/orchestrator)
fi
PIPE=$REPO/pipelines/churn-csv.yaml
# Every tool reads the CSV from the page cache: read it once first, so the
# first command of round 1 does not pay the disk alone.
cat "$CSV" >/dev/null

# --- runs ----------------------------------------------------------------
# timed NAME ROUND DIR CMD...: runs CMD in DIR under /usr/bin/time -v;
# stdout in logs/NAME.ROUND.out, the time report in logs/NAME.ROUND.time.
timed() {
	local name=$1 round=$2 dir=$3
	shift 3
	local out=$WORK/logs/$name.$round
	if ! (cd "$dir" && /usr/bin/time -v -o "$out.time" "$@" >"$out.out" 2>"$out.err"); then
		echo "bench/churn: $name (round $round) failed; see $out.err" >&2
		cat "$out.out" "$out.err" >&2
		exit 1
	fi
}

# A used workspace is moved aside and deleted after the last timed command:
# deleting hundreds of MB (this VM's ext4 is mounted with discard) and
# thousands of inodes right before a run slows the run's own file creation
# (see bench/run.sh).
TRASH=$WORK/trash
fresh() {
	if [ -e "$1" ]; then mkdir -p "$TRASH" && mv "$1" "$TRASH/$(basename "$1").$(date +%s%N)"; fi
	mkdir -p "$1" && cp "$PIPE" "$1/churn-csv.yaml"
}

run_tool() {
	local tool=$1 r=$2 ws=$WORK/ws/$1
	case $tool in
	orch-full)
		fresh "$ws"
		timed orch-full "$r" "$ws" "$ORCH_BIN" run churn-csv.yaml -p "csv=$CSV"
		;;
	orch-ipf)
		fresh "$ws"
		timed orch-ipf "$r" "$ws" "$ORCH_BIN" run churn-csv.yaml features -p "csv=$CSV"
		;;
	pandas)
		fresh "$ws"
		timed pandas "$r" "$ws" $PY "$BASELINES/churn_pipeline.py" "$CSV" "$ws/out"
		;;
	polars)
		fresh "$ws"
		timed polars "$r" "$ws" env MODE=fused node "$WORK/peers/polars_churn.mjs" "$CSV" "$ws/out"
		;;
	duckdb)
		fresh "$ws"
		timed duckdb "$r" "$ws" env MODE=fused node "$WORK/peers/duckdb_churn.mjs" "$CSV" "$ws/out"
		;;
	*)
		echo "bench/churn: unknown tool $tool" >&2
		exit 3
		;;
	esac
}

read -r -a tools <<<"$TOOLS"
for ((r = 1; r <= RUNS; r++)); do
	# Rotate the order each round, so no tool always runs first or last.
	for ((i = 0; i < ${#tools[@]}; i++)); do
		t=${tools[$(((i + r - 1) % ${#tools[@]}))]}
		echo "bench/churn: round $r/$RUNS: $t" >&2
		run_tool "$t" "$r"
	done
done

if [[ " $TOOLS " == *" orch-full "* ]]; then
	ws=$WORK/ws/orch-full
	echo "bench/churn: orch warm rerun and train-param edit" >&2
	timed orch-warm 1 "$ws" "$ORCH_BIN" run churn-csv.yaml -p "csv=$CSV"
	cp "$ws/.orch/out/churn-csv/validate/report" "$WORK/logs/orch-report.json"
	timed orch-plan-edit 1 "$ws" "$ORCH_BIN" plan churn-csv.yaml -p "csv=$CSV" -p l2=0.5
	timed orch-edit 1 "$ws" "$ORCH_BIN" run churn-csv.yaml -p "csv=$CSV" -p l2=0.5
fi

rm -rf "$TRASH"

{
	echo "churn benchmark: $ROWS rows, $RUNS rounds, $(nproc) cores, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "orch $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	$PY "$REPO/bench/churn/report.py" "$WORK/logs" "$RUNS" $TOOLS
} | tee "$WORK/results.md"
