#!/usr/bin/env bash
# Fails when a production binary links a test-only dependency: the embedded
# NATS server, testcontainers or the project's test kit belong in tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for main in "$@"; do
	bad=$(go list -deps "./$main" | grep -E '^(github.com/nats-io/nats-server|github.com/testcontainers|github.com/tenantprov/tenantprov/testkit)' || true)
	if [ -n "$bad" ]; then
		echo "check-prod-deps: $main links test-only packages:" >&2
		echo "$bad" | sed 's/^/  /' >&2
		status=1
	fi
done
[ $status -eq 0 ] && echo "check-prod-deps: $# binaries free of test-only dependencies"
exit $status
