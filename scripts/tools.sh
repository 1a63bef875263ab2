#!/usr/bin/env bash
# Installs the pinned command-line tools the tests and `make up` use into
# ./bin. Each tool is built once per machine into a version-keyed cache
# (~/.cache/tenantprov/tools, or $TENANTPROV_TOOLS_CACHE) and copied from
# there, so a fresh clone — CI's — does not rebuild MinIO (about 5 minutes on
# two cores). Re-running is a no-op when ./bin already has the pinned version.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/bin"
cache="${TENANTPROV_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tenantprov/tools}"
mkdir -p "$bin" "$cache"

# name  package@version
tools=(
	"minio github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
	"nats-server github.com/nats-io/nats-server/v2@v2.15.2"
	"nats github.com/nats-io/natscli/nats@v0.5.0"
	"sops github.com/getsops/sops/v3/cmd/sops@v3.13.3"
)
# --runtime: only what `make up` runs. Otherwise also what the tests of
# deploy/ need: the Helm chart test renders with the real helm, and the
# alerting rules are checked with promtool (each 5–10 minutes to build on
# two cores, once per machine).
if [ "${1:-}" != "--runtime" ]; then
	tools+=(
		"helm helm.sh/helm/v3/cmd/helm@v3.22.0"
		"promtool github.com/prometheus/prometheus/cmd/promtool@v0.316.0"
	)
fi
if [ "${1:-}" = "--with-lint" ]; then
	tools+=("staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2")
fi

command -v go >/dev/null || { echo "tools: Go is required (https://go.dev/doc/install)" >&2; exit 1; }

for entry in "${tools[@]}"; do
	read -r name pkg <<<"$entry"
	version=${pkg##*@}
	stamp="$bin/.$name.version"
	if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
		echo "tools: $name $version already in bin/"
		continue
	fi
	cached="$cache/$name-$version/$name"
	if [ ! -x "$cached" ]; then
		echo "tools: building $name $version (go install $pkg) ..."
		start=$(date +%s)
		GOWORK=off GOFLAGS=-mod=mod GOBIN="$cache/$name-$version" go install "$pkg"
		echo "tools: built $name in $(( $(date +%s) - start ))s"
	fi
	cp -f "$cached" "$bin/$name.tmp" && mv -f "$bin/$name.tmp" "$bin/$name"
	echo "$version" >"$stamp"
	echo "tools: $name $version installed in bin/"
done
