#!/usr/bin/env bash
# Runs once, on the postgres volume's first start (docker-entrypoint-initdb.d):
# the audit roles and database (services/audit-sink/README.md). The owner is
# not a superuser and is used only by audit-migrate; the sink writes as
# tenantprov_audit_sink; operators read as tenantprov_audit_reader. Passwords
# come from compose secrets and reach psql on stdin, never in argv.
set -euo pipefail
pw() { tr -d '\n' <"/run/secrets/$1" | sed "s/'/''/g"; }
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -qtA <<SQL
CREATE ROLE tenantprov_audit_owner LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD '$(pw audit_owner_password)';
CREATE ROLE tenantprov_audit_sink LOGIN NOSUPERUSER CONNECTION LIMIT 20 PASSWORD '$(pw audit_writer_password)';
CREATE ROLE tenantprov_audit_reader LOGIN NOSUPERUSER CONNECTION LIMIT 10 PASSWORD '$(pw audit_reader_password)';
CREATE DATABASE tenantprov_audit OWNER tenantprov_audit_owner;
REVOKE ALL ON DATABASE tenantprov_audit FROM PUBLIC;
GRANT CONNECT ON DATABASE tenantprov_audit TO tenantprov_audit_sink, tenantprov_audit_reader;
SQL
