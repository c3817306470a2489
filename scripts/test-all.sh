#!/usr/bin/env bash
# `make test`: installs what is missing, checks formatting, vet and the
# vendored UI assets, runs every Go test with the race detector, then
# go-nsq's own suite against Sluice. The last line sums the two:
# "total: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
make --no-print-directory lint ui-check
log=$(mktemp -t sluice-test.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
./scripts/unit-tests.sh | tee -a "$log" || status=1
./scripts/gonsq-suite.sh | tee -a "$log" || status=1
read -r p f < <(awk '/^(unit|gonsq): [0-9]+ passed, [0-9]+ failed$/ {p += $2; f += $4} END {print p+0, f+0}' "$log")
echo "total: $p passed, $f failed"
exit "$status"
