#!/usr/bin/env bash
# Runs every Go test of the repository with the race detector (unit,
# integration against real daemons, browser tests, fuzz seed corpora) and
# ends with one summary line: "unit: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -t sluice-unit.XXXXXX)
trap 'rm -f "$out"' EXIT
go test -race -count=1 -timeout 30m -v ./... >"$out" 2>&1
status=$?
# package results, failures with their output context
grep -E '^(ok|FAIL|---.FAIL|panic:)|^\s+--- FAIL' "$out"
if [ "$status" -ne 0 ]; then
	echo "--- output of failing tests ---"
	grep -B40 -A30 -E '^(--- FAIL|panic:|FAIL\s)' "$out" | head -600
fi
passed=$(grep -cE '^\s*--- PASS' "$out")
failed=$(grep -cE '^\s*--- FAIL' "$out")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1 # a build failure or panic outside a test
fi
echo "unit: $passed passed, $failed failed"
exit "$status"
