#!/usr/bin/env bash
# make down: stop exactly what `make up` started (the processes whose pids it
# recorded under .dev/pids, the PostgreSQL cluster in .dev/pg, the Qdrant
# container it ran), and nothing else. Data stays in .dev/ for the next
# `make up`; `rm -rf .dev` forgets it.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dev="$root/.dev"
[ -d "$dev" ] || { echo "nothing to stop (.dev/ does not exist)"; exit 0; }

stop_pid() { # stop_pid NAME: TERM, wait up to 20s, then KILL
	local pidf="$dev/pids/$1.pid" pid
	[ -f "$pidf" ] || return 0
	pid=$(cat "$pidf")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; echo "    $1 killed"; else echo "    $1 stopped"; fi
	fi
	rm -f "$pidf"
}

# Services first (they drain), then the stores and NATS.
for name in orchestrator minio-agent pg-agent qdrant-agent redis-agent audit-sink qdrant-standin minio redis nats-server nats-server-1 nats-server-2; do
	stop_pid "$name"
done
if [ -f "$dev/pg/data/PG_VERSION" ]; then
	pg_bin=$(pg_config --bindir 2>/dev/null || true)
	[ -x "$pg_bin/pg_ctl" ] || pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
	as_pg=(); [ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
	if "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dev/pg/data" status >/dev/null 2>&1; then
		"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dev/pg/data" -m fast -w stop >/dev/null && echo "    postgres stopped"
	fi
fi
if [ "$(cat "$dev/run/qdrant-mode" 2>/dev/null)" = docker ]; then
	docker stop tenantprov-qdrant >/dev/null 2>&1 && echo "    qdrant container stopped"
	rm -f "$dev/run/qdrant-mode"
fi
rm -f "$dev/run/nats-cluster"
echo "down."
