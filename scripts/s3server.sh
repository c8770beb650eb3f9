#!/usr/bin/env bash
# A real S3-compatible server (versitygw, Apache-2.0) on 127.0.0.1 for the
# tests, without Docker.
#
#   scripts/s3server.sh start DIR   build versitygw if missing, start it on a
#                                   free port with its objects under DIR/data,
#                                   create the test bucket, and print `export`
#                                   lines for the tests
#   scripts/s3server.sh stop [DIR]  stop the server started for DIR
#                                   (default: $ORCH_S3SERVER_DIR)
#
# Use:  eval "$(scripts/s3server.sh start "$tmp")"
#       trap 'scripts/s3server.sh stop "$tmp"' EXIT
#
# The binary is built once into $(go env GOPATH)/bin (about 2.5 minutes) and
# reused while it is the pinned version.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
BUCKET=orch-test
ACCESS_KEY=orchtest
SECRET_KEY=orchtest-secret-key
REGION=us-east-1

die() { echo "s3server: $*" >&2; exit 1; }

versitygw_bin() {
	local bin
	bin="$(go env GOPATH)/bin/versitygw"
	if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null |
		grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/versity/versitygw[[:space:]]+$VERSITYGW_VERSION([[:space:]]|$)"; then
		echo "$bin"
		return
	fi
	echo "s3server: building versitygw $VERSITYGW_VERSION into $(dirname "$bin") (about 2.5 minutes, once)" >&2
	GOBIN="$(dirname "$bin")" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2 ||
		die "go install github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION failed"
	echo "$bin"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# s3 METHOD PATH: a SigV4-signed request with an empty body; prints the
# HTTP status.
s3() {
	curl -s -o /dev/null -w '%{http_code}' -X "$1" \
		--aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
		-H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
		"http://127.0.0.1:$port$2"
}

start() {
	local dir=$1 bin pid attempt
	command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)
	if [ -f "$dir/versitygw.pid" ] && kill -0 "$(cat "$dir/versitygw.pid")" 2>/dev/null; then
		die "a server for $dir is already running (pid $(cat "$dir/versitygw.pid")); stop it first"
	fi
	bin=$(versitygw_bin)
	for attempt in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 40000))
		port_free "$port" || continue
		ROOT_ACCESS_KEY=$ACCESS_KEY ROOT_SECRET_KEY=$SECRET_KEY \
			"$bin" --quiet --port "127.0.0.1:$port" --health /health posix "$dir/data" \
			</dev/null >"$dir/versitygw.log" 2>&1 &
		pid=$!
		for _ in $(seq 100); do # up to 10 s; ready in ~0.15 s
			if ! kill -0 "$pid" 2>/dev/null; then
				break # lost the port to someone else: try another
			fi
			if curl -sf -o /dev/null "http://127.0.0.1:$port/health"; then
				echo "$pid" >"$dir/versitygw.pid"
				echo "$port" >"$dir/versitygw.port"
				local st
				st=$(s3 PUT "/$BUCKET")
				case $st in
				200 | 409) ;; # created, or already ours from an earlier start on DIR
				*) kill "$pid"; die "create bucket $BUCKET: HTTP $st (log: $dir/versitygw.log)" ;;
				esac
				cat <<-EOF
					export AWS_ACCESS_KEY_ID=$ACCESS_KEY
					export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
					export AWS_REGION=$REGION
					export AWS_ENDPOINT_URL=http://127.0.0.1:$port
					export ORCH_TEST_S3=s3://$BUCKET/test
					export ORCH_TEST_S3_DATA=$dir/data
					export ORCH_TEST_VERSITYGW=$bin
					export ORCH_S3SERVER_DIR=$dir
					export ORCH_S3SERVER_PID=$pid
				EOF
				echo "s3server: versitygw pid $pid on http://127.0.0.1:$port, bucket $BUCKET, data in $dir/data" >&2
				return
			fi
			sleep 0.1
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	die "versitygw did not start (log: $dir/versitygw.log)"
}

stop() {
	local dir=$1 pid
	[ -n "$dir" ] || die "usage: $0 stop DIR (or set ORCH_S3SERVER_DIR)"
	[ -f "$dir/versitygw.pid" ] || return 0
	pid=$(cat "$dir/versitygw.pid")
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$dir/versitygw.pid" "$dir/versitygw.port"
}

case ${1:-} in
start)
	[ $# -eq 2 ] || die "usage: $0 start DIR"
	start "$2"
	;;
stop)
	stop "${2:-${ORCH_S3SERVER_DIR:-}}"
	;;
*)
	die "usage: $0 start DIR | stop [DIR]"
	;;
esac
