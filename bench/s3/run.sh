#!/usr/bin/env bash
# bench/s3/run.sh — orch's S3 store against awscli on one local S3 server
# (versitygw, started here), in one sitting:
#   a 1 GiB blob up and down, 10,000 small files up and down, and a
#   no-change `orch push` over those 10,000 blobs.
#
#   bash bench/s3/run.sh                # BIG=1GiB SMALL=10000 RUNS=2
#   RUNS=3 bash bench/s3/run.sh -only small
#
# Environment: BIG (bytes, 1073741824), SMALL (10000), RUNS (2: best of),
# AWS (the awscli to use; default /usr/bin/aws, Debian's, installed with
# apt-get when missing and INSTALL=1), WORK (scratch, default a temp dir).
# Extra arguments go to the Go driver (bench/s3/main.go).
# Results: a Markdown table on stdout.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
BIG=${BIG:-1073741824}
SMALL=${SMALL:-10000}
RUNS=${RUNS:-2}
INSTALL=${INSTALL:-1}

AWS=${AWS:-/usr/bin/aws}
if [ ! -x "$AWS" ]; then
	if [ "$INSTALL" = 1 ] && command -v apt-get >/dev/null; then
		echo "s3bench: installing awscli (apt-get)" >&2
		apt-get install -y awscli >/dev/null
	fi
	[ -x "$AWS" ] || AWS=$(command -v aws) || { echo "s3bench: no awscli; set AWS=" >&2; exit 1; }
fi

tmp=$(mktemp -d)
trap 'scripts/s3server.sh stop "$tmp/s3" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/orch" ./cmd/orchestrator
go build -o "$tmp/s3bench" ./bench/s3
eval "$(scripts/s3server.sh start "$tmp/s3")"

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(go version | cut -d' ' -f3), versitygw $(go version -m "$ORCH_TEST_VERSITYGW" | awk '$1=="mod"{print $3}'), $("$AWS" --version 2>&1 | cut -d' ' -f1)"
"$tmp/s3bench" -orch "$tmp/orch" -aws "$AWS" -big "$BIG" -small "$SMALL" -runs "$RUNS" -work "${WORK:-$tmp/work}" "$@"
