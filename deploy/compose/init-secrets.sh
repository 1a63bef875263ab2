#!/usr/bin/env sh
# Creates ./secrets for compose.yaml: random store passwords and the age keys.
# Existing files are kept.
set -eu
cd "$(dirname "$0")"
mkdir -p secrets
umask 077
rand() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-32; }
for f in pg_admin_password redis_admin_password minio_root_password qdrant_api_key audit_owner_password audit_writer_password audit_reader_password; do
	[ -s "secrets/$f" ] || rand >"secrets/$f"
done
if [ ! -s secrets/control-plane.agekey ]; then
	go run ../../cmd/tenantctl keys init --dir secrets >/dev/null
fi
grep -o 'age1[0-9a-z]*' secrets/control-plane.agekey | head -1 >secrets/control_plane_recipient
grep -o 'age1[0-9a-z]*' secrets/operator.agekey | head -1 >secrets/operator_recipients
printf 'user default off\nuser tpadmin on #%s ~* &* +@all\n' "$(tr -d '\n' <secrets/redis_admin_password | sha256sum | cut -d' ' -f1)" >secrets/redis_users.acl
pg=$(tr -d '\n' <secrets/pg_admin_password)
ao=$(tr -d '\n' <secrets/audit_owner_password)
aw=$(tr -d '\n' <secrets/audit_writer_password)
ar=$(tr -d '\n' <secrets/audit_reader_password)
printf 'postgres://tpadmin:%s@postgres:5432/postgres?sslmode=disable' "$pg" >secrets/pg_admin_url
# Audit: the owner (not a superuser) only migrates, the sink writes, operators read.
printf 'postgres://tenantprov_audit_owner:%s@postgres:5432/tenantprov_audit?sslmode=disable' "$ao" >secrets/audit_pg_admin_url
printf 'postgres://tenantprov_audit_sink:%s@postgres:5432/tenantprov_audit?sslmode=disable' "$aw" >secrets/audit_pg_url
printf 'postgres://tenantprov_audit_reader:%s@127.0.0.1:5432/tenantprov_audit?sslmode=disable' "$ar" >secrets/audit_pg_reader_url
# The authenticated bus: bus/keys/ (the authority; keep it where identities
# are issued), bus/auth.conf (for nats-server) and bus/creds/<role>.creds,
# one NATS identity per service, plus operator.creds (tenantctl and the nats
# CLI: NATS_CREDS=secrets/bus/creds/operator.creds), requester.creds and
# observer.creds. Keys are kept, creds issued afresh on every run.
go run ../../cmd/tenantctl bus init --dir secrets/bus >/dev/null
for f in bus/auth.conf bus/creds/orchestrator.creds bus/creds/minio-agent.creds bus/creds/pg-agent.creds \
	bus/creds/qdrant-agent.creds bus/creds/redis-agent.creds bus/creds/audit-sink.creds bus/creds/operator.creds; do
	[ -s "secrets/$f" ] || { echo "init-secrets: secrets/$f was not written" >&2; exit 1; }
done
echo "secrets written to $(pwd)/secrets"
echo "operators: AUDIT_PG_URL_FILE=$(pwd)/secrets/audit_pg_reader_url tenantctl audit --verify"
