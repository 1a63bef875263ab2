-- 0001: the append-only, hash-chained audit log (DESIGN.md §7).
-- Runs as the owner role (AUDIT_PG_ADMIN_URL), inside the migration
-- transaction, after CREATE SCHEMA tenantprov_audit.

CREATE TABLE tenantprov_audit.audit_events (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    event_id    text        NOT NULL UNIQUE,
    type        text        NOT NULL,
    tenant_id   text        NOT NULL DEFAULT '',
    generation  bigint      NOT NULL DEFAULT 0 CHECK (generation >= 0),
    saga_id     text        NOT NULL DEFAULT '',
    store       text        NOT NULL DEFAULT '',
    actor       text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    source      text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    canonical   text        NOT NULL,
    prev_hash   bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        bytea       NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE tenantprov_audit.audit_events IS
    'tenantprov audit log: append-only (triggers refuse UPDATE, DELETE, TRUNCATE), '
    'hash-chained: hash = sha256(prev_hash || canonical), seq gapless from 1';

-- Query helpers: newest first by seq within a tenant, a type, a time range.
CREATE INDEX audit_events_tenant_seq ON tenantprov_audit.audit_events (tenant_id, seq DESC);
CREATE INDEX audit_events_type_seq ON tenantprov_audit.audit_events (type, seq DESC);
CREATE INDEX audit_events_occurred_at ON tenantprov_audit.audit_events (occurred_at);

-- Append-only: refuse every UPDATE and DELETE, whoever asks (the owner and
-- superusers included). Only disabling the trigger, which needs ownership
-- or superuser, gets past it; Verify detects what happens then.
CREATE FUNCTION tenantprov_audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'tenantprov_audit.audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON tenantprov_audit.audit_events
    FOR EACH ROW EXECUTE FUNCTION tenantprov_audit.refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON tenantprov_audit.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION tenantprov_audit.refuse_change();

-- The chain, enforced by the database as well as by the writer: a new row
-- must follow the current head (seq = head + 1, prev_hash = head's hash;
-- seq 1 and 32 zero bytes for the first) and carry the right hash.
-- recorded_at is the database's clock, never the client's.
CREATE FUNCTION tenantprov_audit.check_chain() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prev bytea;
BEGIN
    IF NEW.seq = 1 THEN
        prev := decode(repeat('00', 32), 'hex');
    ELSE
        SELECT e.hash INTO prev FROM tenantprov_audit.audit_events e WHERE e.seq = NEW.seq - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'audit chain: seq % does not follow the head', NEW.seq
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    IF NEW.prev_hash IS DISTINCT FROM prev THEN
        RAISE EXCEPTION 'audit chain: prev_hash of seq % is not the hash of seq %', NEW.seq, NEW.seq - 1
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.hash IS DISTINCT FROM sha256(NEW.prev_hash || convert_to(NEW.canonical, 'UTF8')) THEN
        RAISE EXCEPTION 'audit chain: hash of seq % is not sha256(prev_hash || canonical)', NEW.seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    NEW.recorded_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_events_chain
    BEFORE INSERT ON tenantprov_audit.audit_events
    FOR EACH ROW EXECUTE FUNCTION tenantprov_audit.check_chain();

REVOKE ALL ON tenantprov_audit.audit_events FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantprov_audit.refuse_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantprov_audit.check_chain() FROM PUBLIC;
