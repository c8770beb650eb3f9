#!/bin/sh
# deploy.sh MODEL REPORT RELEASE_DIR: a release directory holding the model,
# its report, and a VERSION derived from the model's content.
set -eu
model=$1 report=$2 out=$3
mkdir -p "$out"
cp "$model" "$out/model.txt"
cp "$report" "$out/report.txt"
cksum < "$model" | awk '{ printf "v%s\n", $1 }' > "$out/VERSION"
echo "release $(cat "$out/VERSION"): $(grep '^auc' "$report")"
