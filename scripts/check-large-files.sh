#!/usr/bin/env bash
# Fails when git tracks a file over 1 MB: build outputs and data belong
# outside the repository (bin/ and the tool cache are ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
big=$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk -v l="$limit" '$1 > l {print $2 " (" $1 " bytes)"}')
if [ -n "$big" ]; then
	echo "lint: tracked files over 1 MB (build outputs or data do not belong in git):" >&2
	echo "$big" >&2
	exit 1
fi
