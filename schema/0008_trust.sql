-- Trust (issue 5): the API and the worker run under roles of their own; row-level security keeps
-- each principal to its own rows even when a query forgets its filter; every write of the
-- register leaves a hash-chained audit row; keys may expire and be rotated.
--
-- The principal of a transaction is a set of transaction-local settings (set_config(…, true)),
-- written by the API's authentication statement: metreg.role, metreg.key_id, metreg.enterprise_id,
-- metreg.lab_id, metreg.region_code, and for the audit metreg.request_id, metreg.action and
-- metreg.now. Nothing set outlives its transaction on a pooled connection (design.md §7).

-- Roles are cluster-wide, so another database of the same cluster may have made them already,
-- possibly at this very moment.
DO $$
BEGIN
    CREATE ROLE metreg_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$
BEGIN
    CREATE ROLE metreg_worker NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

COMMENT ON ROLE metreg_api IS 'metreg HTTP API: row-level security applies; its login must be a member';
COMMENT ON ROLE metreg_worker IS 'metreg worker: reads the register, writes only notices and deliveries';

GRANT USAGE ON SCHEMA public TO metreg_api, metreg_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO metreg_api, metreg_worker;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO metreg_api, metreg_worker;
-- Nothing is ever deleted by either; each migration grants the writes its new tables need.
GRANT INSERT, UPDATE ON enterprises, labs, api_keys, instruments, verification_requests, request_items,
    certificates, instrument_events, notices, deliveries, webhooks TO metreg_api;
GRANT INSERT, UPDATE ON notices, deliveries, delivery_attempts TO metreg_worker;
-- The planner locks due instruments FOR SHARE while it writes their notices, and PostgreSQL asks
-- UPDATE on some column for a row lock: the narrowest grant that allows it (the audit trail
-- would show any use of it).
GRANT UPDATE (version) ON instruments TO metreg_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO metreg_api, metreg_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO metreg_api, metreg_worker;

-- Keys: an optional end, and the key a rotation replaced it with.
ALTER TABLE api_keys
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN rotated_to uuid REFERENCES api_keys (id),
    ADD CHECK (expires_at IS NULL OR expires_at >= created_at);
CREATE INDEX api_keys_listing ON api_keys (created_at DESC, id DESC);


-- The principal, read back. An unset or reset setting reads as '' (or NULL before first use).
CREATE FUNCTION principal_role() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('metreg.role', true), '') $$;
CREATE FUNCTION principal_enterprise() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('metreg.enterprise_id', true), '')::uuid $$;
CREATE FUNCTION principal_lab() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('metreg.lab_id', true), '')::uuid $$;
CREATE FUNCTION principal_region() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('metreg.region_code', true), '') $$;

-- The checks that read other tables run as their owner: policies that queried tables with
-- policies of their own would recurse, and these lookups must see rows the principal cannot.
-- pg_temp comes last in their search path, so that no session's temporary table can stand in.
CREATE FUNCTION region_covers(enterprise uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM enterprises e
                   WHERE e.id = enterprise AND starts_with(e.region_code, principal_region()))
$$;
-- A lab sees an instrument it holds or held a request for, or issued a document for.
CREATE FUNCTION lab_sees_instrument(instrument uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM request_items ri JOIN verification_requests r ON r.id = ri.request_id
                   WHERE ri.instrument_id = instrument AND r.lab_id = principal_lab())
        OR EXISTS (SELECT 1 FROM certificates c WHERE c.instrument_id = instrument AND c.lab_id = principal_lab())
$$;
CREATE FUNCTION lab_sees_enterprise(enterprise uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM verification_requests r WHERE r.enterprise_id = enterprise AND r.lab_id = principal_lab())
        OR EXISTS (SELECT 1 FROM certificates c WHERE c.enterprise_id = enterprise AND c.lab_id = principal_lab())
$$;
-- The public certificate check sees the one document it was asked for (metreg.lab_id and
-- metreg.number), what supersedes it, its instrument and that instrument's enterprise.
CREATE FUNCTION public_certificate() RETURNS certificates
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT * FROM certificates
    WHERE principal_role() = 'public' AND lab_id = principal_lab()
      AND number = nullif(current_setting('metreg.number', true), '')
$$;

-- Whether the principal sees the register of an enterprise (design.md §5).
CREATE FUNCTION principal_sees(enterprise uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT principal_role() = 'admin'
        OR enterprise = principal_enterprise()
        OR (principal_role() = 'regulator' AND region_covers(enterprise))
$$;

ALTER TABLE enterprises ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON enterprises TO metreg_api USING (
    principal_role() = 'admin' OR id = principal_enterprise()
    OR (principal_role() = 'regulator' AND starts_with(region_code, principal_region()))
    OR (principal_role() = 'lab' AND lab_sees_enterprise(id))
    OR (principal_role() = 'public' AND id = (public_certificate()).enterprise_id)
);

ALTER TABLE instruments ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON instruments TO metreg_api USING (
    principal_sees(enterprise_id)
    OR (principal_role() = 'lab' AND lab_sees_instrument(id))
    OR (principal_role() = 'public' AND id = (public_certificate()).instrument_id)
);

ALTER TABLE certificates ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON certificates TO metreg_api USING (
    principal_sees(enterprise_id)
    OR (principal_role() = 'lab' AND lab_sees_instrument(instrument_id))
    OR (principal_role() = 'public' AND (id = (public_certificate()).id OR supersedes = (public_certificate()).id))
);

ALTER TABLE verification_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON verification_requests TO metreg_api USING (
    principal_sees(enterprise_id) OR (principal_role() = 'lab' AND lab_id = principal_lab())
);

-- The rows below a visible parent: the parent's own policy decides.
ALTER TABLE request_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON request_items TO metreg_api
    USING (EXISTS (SELECT 1 FROM verification_requests r WHERE r.id = request_id));

-- The public check sees the instrument of its certificate, not what happened to it.
ALTER TABLE instrument_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON instrument_events TO metreg_api USING (
    principal_role() IS DISTINCT FROM 'public' AND EXISTS (SELECT 1 FROM instruments i WHERE i.id = instrument_id)
);

-- A lab's result writes the enterprise's result notice (and cancels stale reminders) itself.
ALTER TABLE notices ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON notices TO metreg_api USING (
    principal_sees(enterprise_id) OR (principal_role() = 'lab' AND lab_sees_instrument(instrument_id))
);

-- Where notices went is for their owners: a lab writes result notices but never reads deliveries.
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON deliveries TO metreg_api USING (
    principal_role() IS DISTINCT FROM 'lab' AND EXISTS (SELECT 1 FROM notices n WHERE n.id = notice_id)
);

ALTER TABLE delivery_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON delivery_attempts TO metreg_api
    USING (EXISTS (SELECT 1 FROM deliveries d WHERE d.id = delivery_id));

-- Keys: an admin sees all, any other key those of its own role and scope. Before a request has
-- authenticated (no principal yet) the one statement that runs is the key check itself, which
-- must find the key by its prefix; it then sets the principal.
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON api_keys TO metreg_api USING (
    principal_role() IS NULL OR principal_role() = 'admin'
    OR (role = principal_role() AND enterprise_id IS NOT DISTINCT FROM principal_enterprise()
        AND lab_id IS NOT DISTINCT FROM principal_lab() AND region_code IS NOT DISTINCT FROM principal_region())
);
CREATE POLICY worker ON api_keys TO metreg_worker USING (true);

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON webhooks TO metreg_api USING (
    principal_role() = 'admin' OR enterprise_id = principal_enterprise()
    OR (principal_role() = 'regulator' AND region_code = principal_region())
);

-- The worker serves every tenant; its grants, not policies, bound what it may do.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['enterprises', 'instruments', 'certificates', 'verification_requests',
                             'request_items', 'instrument_events', 'notices', 'deliveries',
                             'delivery_attempts', 'webhooks']
    LOOP
        EXECUTE format('CREATE POLICY worker ON %I TO metreg_worker USING (true)', t);
    END LOOP;
END $$;


-- The audit trail: one row per changed row of the register, in the writing transaction, chained
-- by SHA-256 (each row's hash covers the previous row's hash and its own content), so that an
-- edited, removed or inserted row breaks the chain at that row (`metreg audit verify`).
CREATE TABLE audit_log (
    seq           bigint PRIMARY KEY CHECK (seq > 0),
    at            timestamptz NOT NULL,
    request_id    text,
    actor_key_id  uuid,
    -- admin, enterprise, lab, regulator; `system` for the command line and migrations.
    actor_role    text NOT NULL,
    -- The API operation (its operation id) or the command that wrote.
    action        text NOT NULL,
    entity        text NOT NULL,
    entity_id     text NOT NULL,
    operation     text NOT NULL CHECK (operation IN ('insert', 'update', 'delete')),
    -- Whose data it is: an enterprise, and the region that enterprise (or a regulator's row) is in.
    enterprise_id uuid,
    region_code   text,
    before        jsonb,
    after         jsonb,
    prev_hash     bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash          bytea NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX audit_log_enterprise ON audit_log (enterprise_id, seq DESC);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, seq DESC);

-- The hashed text: every field length-prefixed (NULL as '-'), so that no two rows can be read
-- into the same text. `service/audit/chain.py` computes the same in Python to verify.
CREATE FUNCTION audit_field(value text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN value IS NULL THEN '-' ELSE length(value) || ':' || value END $$;
CREATE FUNCTION audit_digest(prev bytea, entry audit_log) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(prev || convert_to(concat_ws(E'\n',
        audit_field(entry.seq::text),
        audit_field(((extract(epoch FROM entry.at) * 1000000)::bigint)::text),
        audit_field(entry.request_id),
        audit_field(entry.actor_key_id::text),
        audit_field(entry.actor_role),
        audit_field(entry.action),
        audit_field(entry.entity),
        audit_field(entry.entity_id),
        audit_field(entry.operation),
        audit_field(entry.enterprise_id::text),
        audit_field(entry.region_code),
        audit_field(entry.before::text),
        audit_field(entry.after::text)), 'UTF8'))
$$;

-- Runs as the owner: the API and the worker may read the trail (within their policies) but never
-- write it themselves. Columns named in the trigger's arguments are left out: secrets, and
-- bookkeeping (last_used_at) that would otherwise write a row per request.
CREATE FUNCTION audit_record() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    hidden text[] := coalesce(TG_ARGV, '{}');  -- NULL when the trigger has no arguments
    old_row jsonb;
    new_row jsonb;
    subject jsonb;
    entry audit_log;
    last_seq bigint;
    last_hash bytea;
BEGIN
    IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD) - hidden; END IF;
    IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW) - hidden; END IF;
    IF old_row = new_row THEN
        RETURN NULL;
    END IF;
    subject := coalesce(new_row, old_row);

    entry.at := coalesce(nullif(current_setting('metreg.now', true), '')::timestamptz, now());
    entry.request_id := nullif(current_setting('metreg.request_id', true), '');
    entry.actor_key_id := nullif(current_setting('metreg.key_id', true), '')::uuid;
    entry.actor_role := coalesce(principal_role(), 'system');
    entry.action := coalesce(nullif(current_setting('metreg.action', true), ''), 'sql');
    entry.entity := TG_TABLE_NAME;
    -- request_items is the one table keyed by two columns.
    entry.entity_id := coalesce(subject ->> 'id', (subject ->> 'request_id') || '/' || (subject ->> 'instrument_id'));
    entry.operation := lower(TG_OP);
    entry.enterprise_id := CASE TG_TABLE_NAME
        WHEN 'enterprises' THEN (subject ->> 'id')::uuid
        WHEN 'request_items' THEN (SELECT enterprise_id FROM verification_requests
                                   WHERE id = (subject ->> 'request_id')::uuid)
        ELSE (subject ->> 'enterprise_id')::uuid
    END;
    entry.region_code := coalesce(
        (SELECT region_code FROM enterprises WHERE id = entry.enterprise_id),
        CASE WHEN TG_TABLE_NAME IN ('api_keys', 'webhooks', 'labs') THEN subject ->> 'region_code' END);
    entry.before := old_row;
    entry.after := new_row;

    -- One chain: appends are serialised by a lock held to commit. The trigger is deferred to
    -- commit, so the lock is held for the commit only, not for the whole transaction.
    PERFORM pg_advisory_xact_lock(7883959171150410092);  -- 'metreg audit'
    SELECT seq, hash INTO last_seq, last_hash FROM audit_log ORDER BY seq DESC LIMIT 1;
    entry.seq := coalesce(last_seq, 0) + 1;
    entry.prev_hash := coalesce(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    entry.hash := audit_digest(entry.prev_hash, entry);
    INSERT INTO audit_log VALUES (entry.*);
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
    hidden text;
BEGIN
    FOREACH t IN ARRAY ARRAY['enterprises', 'labs', 'api_keys', 'instruments', 'verification_requests',
                             'request_items', 'certificates', 'webhooks']
    LOOP
        hidden := CASE t WHEN 'api_keys' THEN '''secret_sha256'', ''last_used_at'''
                         WHEN 'webhooks' THEN '''secret'''
                         ELSE '' END;
        EXECUTE format('CREATE CONSTRAINT TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_record(%s)', t, hidden);
    END LOOP;
END $$;

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- Admins see the whole trail; an enterprise its own rows; a regulator those of its region.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
-- A regulator reads the register's changes in its region, not where enterprises send their
-- webhooks or what keys they hold (the API shows it neither).
CREATE POLICY principal ON audit_log FOR SELECT TO metreg_api USING (
    principal_role() = 'admin' OR enterprise_id = principal_enterprise()
    OR (principal_role() = 'regulator' AND starts_with(region_code, principal_region())
        AND (entity NOT IN ('webhooks', 'api_keys') OR enterprise_id IS NULL AND region_code = principal_region()))
);
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_log FROM metreg_api, metreg_worker;
