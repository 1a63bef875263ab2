#!/usr/bin/env bash
# Runs every test of every workspace module against real servers. Under
# CI=true a skipped test is a failure: the kit skips only when a server
# binary is missing, and CI must have them all.
set -euo pipefail
# TEST_PARALLEL packages at once (default 4 on any machine): the tests
# mostly wait on real servers (a full run keeps two cores about a quarter
# busy), so more packages at once shorten the wall time; every test uses
# its own servers on free ports.
cd "$(dirname "$0")/.."
log=$(mktemp -t tenantprov-test.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
go test -count=1 -p "${TEST_PARALLEL:-4}" -timeout "${TEST_TIMEOUT:-14m}" -v "$@" 2>&1 | tee "$log" | grep -vE '^(=== (RUN|PAUSE|CONT|NAME)|\s+--- PASS|--- PASS)' || status=$?
if [ "${CI:-}" = "true" ] && grep -qE '^\s*--- SKIP' "$log"; then
	echo "test: tests were skipped under CI=true (a missing dependency must fail, not skip):" >&2
	grep -E -A2 '^\s*--- SKIP' "$log" >&2
	status=1
fi
passed=$(grep -cE '^\s*--- PASS' "$log" || true)
failed=$(grep -cE '^\s*--- FAIL' "$log" || true)
skipped=$(grep -cE '^\s*--- SKIP' "$log" || true)
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
