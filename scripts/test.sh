#!/usr/bin/env bash
# The whole test suite, from a fresh clone: static checks, then every Go test
# with the race detector. Installs what it needs (pinned versions).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$(go env GOPATH)/bin:$PATH"
STATICCHECK_VERSION=0.8.2   # staticcheck 2026.2.2, the release that knows Go 1.26

step() { printf '\n== %s\n' "$*"; }

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck v$STATICCHECK_VERSION"
if ! staticcheck -version 2>/dev/null | grep -q "($STATICCHECK_VERSION)"; then
	go install "honnef.co/go/tools/cmd/staticcheck@v$STATICCHECK_VERSION"
fi
staticcheck ./...

step "build"
go build -o bin/orch ./cmd/orchestrator

step "S3 test server (versitygw)"
s3dir=$(mktemp -d) slurmdir=$(mktemp -d)
trap 'scripts/s3server.sh stop "$s3dir"; rm -rf "$s3dir"; scripts/slurm.sh stop "$slurmdir"; rm -rf "$slurmdir"' EXIT
s3env=$(scripts/s3server.sh start "$s3dir")   # builds versitygw once (~2.5 min) into $(go env GOPATH)/bin
eval "$s3env"

step "headless browser (chromium + chromedriver)"
browserenv=$(scripts/browser.sh)   # apt-get install once; sets ORCH_TEST_CHROMEDRIVER
eval "$browserenv"

step "promtool (orch serve's /metrics lint)"
scripts/promtool.sh

step "Slurm test cluster (slurm-wlm 22.05, one node on 127.0.0.1)"
slurmenv=$(scripts/slurm.sh start "$slurmdir")  # apt-get installs slurm-wlm and munge once (~20 s)
eval "$slurmenv"

step "go test -race"
go test -race -count=1 -timeout 20m ./...

echo; echo "all tests passed"
