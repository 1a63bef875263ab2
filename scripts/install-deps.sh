#!/usr/bin/env bash
# Installs the Debian packages the tests and `make up` need when they are
# missing: PostgreSQL (initdb, postgres), Redis (redis-server), curl.
set -euo pipefail

need=()
if ! command -v redis-server >/dev/null; then need+=(redis-server); fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then need+=(postgresql); fi
if ! command -v runuser >/dev/null; then need+=(util-linux); fi
if ! command -v curl >/dev/null; then need+=(curl); fi # make up waits on health endpoints with it
if [ ${#need[@]} -eq 0 ]; then
	echo "deps: postgresql and redis-server present"
	exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "deps: installing ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
