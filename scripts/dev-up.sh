#!/usr/bin/env bash
# make up: the whole system on this machine — PostgreSQL, Redis, MinIO,
# NATS with JetStream, Qdrant (real when QDRANT_URL is set or a Docker engine
# answers; otherwise the stand-in, announced loudly), the control-plane and
# a dev operator key, and all six services as separate processes. Everything
# lives under .dev/ (data, logs, pids, keys); running it twice is harmless,
# and `make down` stops exactly what it started.
#
# NATS runs authenticated (DESIGN.md §11): `tenantctl bus init` makes .dev/bus
# the bus authority (keys/, auth.conf, creds/<role>.creds); each service gets
# its own identity as NATS_CREDS, and .dev/env gives the operator's.
#
# Nothing secret is ever put in a process's argv: passwords reach servers and
# services through the environment or files. Everything under .dev/ is
# created private (umask 077 once the build is done): directories 0700,
# files 0600.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dev="$root/.dev"
(umask 077; mkdir -p "$dev"/{logs,pids,keys,run,bus})
chmod 700 "$dev"/{logs,pids,keys,run,bus}
# Run as root, PostgreSQL runs as the postgres user, which must traverse
# .dev/ to reach its data directory: .dev/ is then group postgres, mode 0710
# (traverse only, no listing, nothing for anyone else); otherwise 0700.
private_dev() {
	if [ "$(id -u)" -eq 0 ] && getent group postgres >/dev/null; then
		chgrp postgres "$dev" && chmod 710 "$dev"
	else
		chmod 700 "$dev"
	fi
}
private_dev

# Ports: the standard port + 10000, so that a PostgreSQL, Redis, MinIO or
# NATS already running on this machine does not clash.
: "${NATS_PORT:=14222}" "${NATS_MONITOR_PORT:=18222}" "${PG_PORT:=15432}" "${REDIS_PORT:=16379}"
: "${MINIO_PORT:=19000}" "${MINIO_CONSOLE_PORT:=19001}" "${QDRANT_STANDIN_PORT:=16334}" "${HEALTH_PORT_BASE:=19180}"
# NATS_CLUSTER=3 (`make up NATS_CLUSTER=3`): the production topology of
# DESIGN.md §12, three nodes on NATS_PORT..+2 (monitoring NATS_MONITOR_PORT..+2,
# routes NATS_ROUTE_PORT..+2) with every stream, the registry and the secrets
# store at 3 replicas, and the same authorization.
: "${NATS_CLUSTER:=1}" "${NATS_ROUTE_PORT:=16222}"
case "$NATS_CLUSTER" in 1 | 3) ;; *) echo "NATS_CLUSTER=$NATS_CLUSTER: want 1 or 3" >&2; exit 2 ;; esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
warn() { printf '\033[1;33m!!! %s\033[0m\n' "$*" >&2; }

running() { # running NAME: is the process in .dev/pids/NAME.pid alive?
	local pidf="$dev/pids/$1.pid"
	[ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null
}

start_bg() { # start_bg NAME CMD...: run in the background, log and pid under .dev
	local name=$1; shift
	if running "$name"; then echo "    $name already running (pid $(cat "$dev/pids/$name.pid"))"; return; fi
	(umask 077; : >>"$dev/logs/$name.log")
	nohup setsid "$@" >>"$dev/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$dev/pids/$name.pid"
	echo "    $name started (pid $!, log .dev/logs/$name.log)"
}

wait_for() { # wait_for WHAT SECONDS CMD...
	local what=$1 secs=$2; shift 2
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $end ]; then warn "$what did not become ready in ${secs}s; see .dev/logs/"; return 1; fi
		sleep 0.3
	done
}

secret_of() { # secret_of NAME: a random secret kept in .dev/run/NAME (stable across runs)
	local f="$dev/run/$1"
	[ -s "$f" ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-32 >"$f")
	cat "$f"
}

say "dependencies (Debian packages, pinned tools)"
scripts/install-deps.sh
scripts/tools.sh --runtime
bin="$root/bin"
say "building the services, tenantctl and the Qdrant stand-in"
mkdir -p "$bin"
go build -o "$bin/" ./services/orchestrator ./services/minio-agent ./services/pg-agent ./services/qdrant-agent ./services/redis-agent ./services/audit-sink ./cmd/tenantctl ./testkit/cmd/qdrant-standin

# From here on everything this script creates is private to its user.
umask 077

say "keys"
"$bin/tenantctl" keys init --dir "$dev/keys" >/dev/null
chmod 700 "$dev/keys"
cp_recipient=$(grep -o 'age1[0-9a-z]*' "$dev/keys/control-plane.agekey" | head -1)
op_recipient=$(grep -o 'age1[0-9a-z]*' "$dev/keys/operator.agekey" | head -1)
echo "    control plane: $cp_recipient"
echo "    operator:      $op_recipient (.dev/keys/operator.agekey)"

say "PostgreSQL on 127.0.0.1:$PG_PORT"
pg_bin=$(pg_config --bindir 2>/dev/null || true)
[ -x "$pg_bin/initdb" ] || pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
pg_admin_pw=$(secret_of pg-admin)
pgdata="$dev/pg/data"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
if [ ! -f "$pgdata/PG_VERSION" ]; then
	mkdir -p "$dev/pg"
	private_dev
	chmod 700 "$dev/pg"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$dev/pg"
	pwfile="$dev/pg/.pw"; (umask 077; echo "$pg_admin_pw" >"$pwfile"); [ "$(id -u)" -eq 0 ] && chown postgres: "$pwfile"
	"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdata" -U tpadmin --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 --locale=C >"$dev/logs/initdb.log" 2>&1
	rm -f "$pwfile"
	cat >"$pgdata/pg_hba.conf" <<HBA
# tenantprov dev: SCRAM only, loopback only
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
HBA
	cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$pgdata'
password_encryption = 'scram-sha-256'
log_destination = 'stderr'
CONF
fi
private_dev
if "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
	echo "    postgres already running"
else
	"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -l "$dev/pg/postgres.log" -w -t 30 start >/dev/null
	echo "    postgres started (log .dev/pg/postgres.log)"
fi
pg_admin_url="postgres://tpadmin:$pg_admin_pw@127.0.0.1:$PG_PORT/postgres?sslmode=disable"

say "Redis on 127.0.0.1:$REDIS_PORT"
redis_admin_pw=$(secret_of redis-admin)
mkdir -p "$dev/redis"
acl="$dev/redis/users.acl"
if [ ! -f "$acl" ]; then
	hash=$(printf '%s' "$redis_admin_pw" | sha256sum | cut -d' ' -f1)
	printf 'user default off\nuser tpadmin on #%s ~* &* +@all\n' "$hash" >"$acl"
fi
start_bg redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --aclfile "$acl" --dir "$dev/redis" --save "" --appendonly no
# redis-cli takes the password from REDISCLI_AUTH, not from argv.
REDISCLI_AUTH="$redis_admin_pw" wait_for redis 20 redis-cli -p "$REDIS_PORT" --user tpadmin ping

say "MinIO on 127.0.0.1:$MINIO_PORT"
minio_root_pw=$(secret_of minio-root)
mkdir -p "$dev/minio"
MINIO_ROOT_USER=tpadmin MINIO_ROOT_PASSWORD="$minio_root_pw" MINIO_BROWSER=off start_bg minio "$bin/minio" server "$dev/minio/data" --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT"
wait_for minio 60 curl -fsS "http://127.0.0.1:$MINIO_PORT/minio/health/cluster"

"$bin/tenantctl" bus init --dir "$dev/bus" >/dev/null
if running nats-server && [ "$(cat "$dev/run/nats-cluster" 2>/dev/null || echo 1)" != "$NATS_CLUSTER" ]; then
	warn "NATS is running with NATS_CLUSTER=$(cat "$dev/run/nats-cluster" 2>/dev/null || echo 1); run \`make down\` first"
	exit 1
fi
echo "$NATS_CLUSTER" >"$dev/run/nats-cluster"
if [ "$NATS_CLUSTER" = 1 ]; then
	say "NATS with JetStream on 127.0.0.1:$NATS_PORT (authenticated: one identity per role, .dev/bus/creds/)"
	mkdir -p "$dev/nats"
	start_bg nats-server "$bin/nats-server" -c "$dev/bus/auth.conf" -js -sd "$dev/nats" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -n tenantprov-dev
	wait_for nats 20 curl -fsS "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true"
	nats_url="nats://127.0.0.1:$NATS_PORT"
	js_replicas=1
else
	say "NATS: 3-node JetStream cluster on 127.0.0.1:$NATS_PORT-$((NATS_PORT + 2)) (authenticated; R3 streams)"
	routes=""; nats_url=""
	for i in 0 1 2; do
		routes+="${routes:+,}nats-route://127.0.0.1:$((NATS_ROUTE_PORT + i))"
		nats_url+="${nats_url:+,}nats://127.0.0.1:$((NATS_PORT + i))"
	done
	for i in 0 1 2; do
		node=nats-server; [ "$i" -gt 0 ] && node=nats-server-$i
		mkdir -p "$dev/nats-cluster/n$i"
		start_bg "$node" "$bin/nats-server" -c "$dev/bus/auth.conf" -js -sd "$dev/nats-cluster/n$i" -a 127.0.0.1 \
			-p "$((NATS_PORT + i))" -m "$((NATS_MONITOR_PORT + i))" -n "tenantprov-dev-n$i" \
			--cluster_name tenantprov-dev --cluster "nats://127.0.0.1:$((NATS_ROUTE_PORT + i))" --routes "$routes"
	done
	for i in 0 1 2; do # /healthz without js-enabled-only waits for the JetStream meta leader
		wait_for "nats node n$i" 60 curl -fsS "http://127.0.0.1:$((NATS_MONITOR_PORT + i))/healthz"
	done
	js_replicas=3
fi

qdrant_api_key=$(secret_of qdrant-api-key)
qdrant_kind=""
if [ -n "${QDRANT_URL:-}" ]; then
	hostport=${QDRANT_URL#*://}; hostport=${hostport%%/*}
	qdrant_host=${hostport%:*}; qdrant_port=${hostport##*:}
	qdrant_api_key=${QDRANT_API_KEY:?QDRANT_URL is set: set QDRANT_API_KEY too (the server must run with jwt_rbac)}
	qdrant_kind="real Qdrant at $qdrant_host:$qdrant_port (QDRANT_URL)"
elif docker info >/dev/null 2>&1; then
	say "Qdrant (Docker) on 127.0.0.1:$QDRANT_STANDIN_PORT"
	if ! docker ps --format '{{.Names}}' | grep -qx tenantprov-qdrant; then
		docker run -d --rm --name tenantprov-qdrant -p "127.0.0.1:$QDRANT_STANDIN_PORT:6334" \
			-e QDRANT__SERVICE__API_KEY="$qdrant_api_key" -e QDRANT__SERVICE__JWT_RBAC=true qdrant/qdrant:v1.17.0 >/dev/null
	fi
	echo docker >"$dev/run/qdrant-mode"
	qdrant_host=127.0.0.1; qdrant_port=$QDRANT_STANDIN_PORT
	qdrant_kind="real Qdrant (Docker container tenantprov-qdrant)"
else
	warn "No QDRANT_URL and no Docker engine: starting the Qdrant STAND-IN (an in-memory imitation for"
	warn "development and tests, NOT Qdrant). Tenant records will say so. Set QDRANT_URL for a real one."
	QDRANT__SERVICE__API_KEY="$qdrant_api_key" start_bg qdrant-standin "$bin/qdrant-standin" -listen "127.0.0.1:$QDRANT_STANDIN_PORT" -jwt-rbac
	qdrant_host=127.0.0.1; qdrant_port=$QDRANT_STANDIN_PORT
	qdrant_kind="Qdrant STAND-IN (no QDRANT_URL, no Docker)"
fi
echo "$qdrant_kind" >"$dev/run/qdrant-kind"

say "audit database (owner only migrates; the sink's writer may only INSERT and SELECT; operators read)"
# [audit roles: owner (not a superuser, used only by `audit-sink migrate`),
# writer (the sink), reader (operators: .dev/env's AUDIT_PG_URL). Passwords
# go to psql on stdin and to the services in 0600 files, never in argv.]
audit_owner_pw=$(secret_of audit-owner)
audit_pw=$(secret_of audit-writer)
audit_reader_pw=$(secret_of audit-reader)
audit_url="postgres://tenantprov_audit_sink:$audit_pw@127.0.0.1:$PG_PORT/tenantprov_audit?sslmode=disable"
audit_admin_url="postgres://tenantprov_audit_owner:$audit_owner_pw@127.0.0.1:$PG_PORT/tenantprov_audit?sslmode=disable"
audit_reader_url="postgres://tenantprov_audit_reader:$audit_reader_pw@127.0.0.1:$PG_PORT/tenantprov_audit?sslmode=disable"
(umask 077
	printf '%s' "$audit_url" >"$dev/run/audit-writer-url"
	printf '%s' "$audit_admin_url" >"$dev/run/audit-owner-url")
psql_admin() { PGPASSWORD="$pg_admin_pw" psql -h 127.0.0.1 -p "$PG_PORT" -U tpadmin -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
# The passwords reach psql through its environment (\getenv), never argv.
AUDIT_OWNER_PW="$audit_owner_pw" AUDIT_SINK_PW="$audit_pw" AUDIT_READER_PW="$audit_reader_pw" psql_admin >/dev/null <<'SQL'
\getenv owner_pw AUDIT_OWNER_PW
\getenv sink_pw AUDIT_SINK_PW
\getenv reader_pw AUDIT_READER_PW
SELECT 'CREATE ROLE tenantprov_audit_owner LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantprov_audit_owner') \gexec
SELECT 'CREATE ROLE tenantprov_audit_sink LOGIN CONNECTION LIMIT 20' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantprov_audit_sink') \gexec
SELECT 'CREATE ROLE tenantprov_audit_reader LOGIN CONNECTION LIMIT 10' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantprov_audit_reader') \gexec
ALTER ROLE tenantprov_audit_owner NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD :'owner_pw';
ALTER ROLE tenantprov_audit_sink NOSUPERUSER PASSWORD :'sink_pw';
ALTER ROLE tenantprov_audit_reader NOSUPERUSER PASSWORD :'reader_pw';
SELECT 'CREATE DATABASE tenantprov_audit OWNER tenantprov_audit_owner' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tenantprov_audit') \gexec
REVOKE ALL ON DATABASE tenantprov_audit FROM PUBLIC;
GRANT CONNECT ON DATABASE tenantprov_audit TO tenantprov_audit_sink, tenantprov_audit_reader;
SQL
if AUDIT_PG_ADMIN_URL_FILE="$dev/run/audit-owner-url" AUDIT_PG_WRITER=tenantprov_audit_sink AUDIT_PG_READERS=tenantprov_audit_reader \
	"$bin/audit-sink" migrate >>"$dev/logs/audit-migrate.log" 2>&1; then
	echo "    audit schema migrated as tenantprov_audit_owner (log .dev/logs/audit-migrate.log)"
else
	warn "audit-sink migrate failed; see .dev/logs/audit-migrate.log"; tail -5 "$dev/logs/audit-migrate.log" >&2 || true; exit 1
fi
# [/audit roles]

say "services"
common=(NATS_URL="$nats_url" JETSTREAM_REPLICAS="$js_replicas" LOG_LEVEL="${LOG_LEVEL:-info}" CONTROL_PLANE_RECIPIENT="$cp_recipient")
svc() { # svc NAME PORT_OFFSET ENV...: its own NATS identity; settings (secrets too) in its environment, not argv
	local name=$1 off=$2; shift 2
	(
		export "${common[@]}" NATS_CREDS="$dev/bus/creds/$name.creds" HTTP_ADDR="127.0.0.1:$((HEALTH_PORT_BASE + off))" "$@"
		start_bg "$name" "$bin/$name"
	)
}
# The orchestrator creates the JetStream topology; the others only bind to it.
svc orchestrator 0 CONTROL_PLANE_IDENTITY_FILE="$dev/keys/control-plane.agekey" OPERATOR_RECIPIENTS="$op_recipient"
# A service that exits (bad credentials, a port in use) is reported at once.
wait_service() { # wait_service NAME PORT
	local end=$((SECONDS + 90))
	until curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; do
		if ! running "$1"; then warn "$1 exited: $(tail -1 "$dev/logs/$1.log")"; return 1; fi
		if [ $SECONDS -ge $end ]; then warn "$1 did not become ready in 90s; see .dev/logs/$1.log"; return 1; fi
		sleep 0.3
	done
}
wait_service orchestrator "$HEALTH_PORT_BASE" || exit 1
svc audit-sink 5 AUDIT_PG_URL_FILE="$dev/run/audit-writer-url" # the writer only, never the owner
svc pg-agent 2 PG_ADMIN_URL="$pg_admin_url" PG_SSLMODE=disable PG_TENANT_CIDR=127.0.0.1/32
svc redis-agent 4 REDIS_ADDR="127.0.0.1:$REDIS_PORT" REDIS_ADMIN_USER=tpadmin REDIS_ADMIN_PASSWORD="$redis_admin_pw"
svc minio-agent 1 MINIO_ENDPOINT="127.0.0.1:$MINIO_PORT" MINIO_ROOT_USER=tpadmin MINIO_ROOT_PASSWORD="$minio_root_pw"
svc qdrant-agent 3 QDRANT_HOST="$qdrant_host" QDRANT_GRPC_PORT="$qdrant_port" QDRANT_API_KEY="$qdrant_api_key"

say "waiting for every service to be ready"
ok=1
for pair in orchestrator:0 minio-agent:1 pg-agent:2 qdrant-agent:3 redis-agent:4 audit-sink:5; do
	name=${pair%%:*}; port=$((HEALTH_PORT_BASE + ${pair##*:}))
	if wait_service "$name" "$port"; then
		echo "    $name ready (http://127.0.0.1:$port/readyz)"
	else
		ok=0; tail -5 "$dev/logs/$name.log" >&2 || true
	fi
done

rm -f "$dev/env"
(umask 077; cat >"$dev/env" <<ENV
# Written by make up. Source it: . .dev/env
export NATS_URL=$nats_url
# The operator's NATS identity, for tenantctl and the nats CLI (both read NATS_CREDS).
export NATS_CREDS=$dev/bus/creds/operator.creds
export PG_ADMIN_URL='$pg_admin_url'
export REDIS_ADDR=127.0.0.1:$REDIS_PORT
export REDIS_ADMIN_USER=tpadmin
export REDIS_ADMIN_PASSWORD='$redis_admin_pw'
export MINIO_ENDPOINT=127.0.0.1:$MINIO_PORT
export MINIO_ROOT_USER=tpadmin
export MINIO_ROOT_PASSWORD='$minio_root_pw'
export QDRANT_HOST=$qdrant_host
export QDRANT_GRPC_PORT=$qdrant_port
export QDRANT_API_KEY='$qdrant_api_key'
export SOPS_AGE_KEY_FILE=$dev/keys/operator.agekey
export AUDIT_PG_URL='$audit_reader_url' # read-only: tenantctl audit [--verify]
export PATH="$bin:\$PATH"
ENV
)

if [ $ok -ne 1 ]; then
	warn "some services are not ready; logs are in .dev/logs/. \`make down\` stops everything."
	exit 1
fi
say "tenantprov is up. Qdrant: $qdrant_kind"
cat <<TXT

  . .dev/env                                   # NATS_URL, admin endpoints, keys, PATH
  tenantctl provision demo --wait              # or: nats pub tenant.requested '{"tenant_id":"demo"}'
  nats kv get tenants demo                     # the registry record
  tenantctl secrets get demo --store postgres --format env
  tenantctl deprovision demo --wait
  tenantctl bus issue requester --dir .dev/bus --name requester-billing --out billing.creds
                                               # a NATS identity for an upstream system
  make down                                    # stop everything make up started

TXT
