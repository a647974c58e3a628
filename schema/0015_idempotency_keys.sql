-- Idempotency keys (design.md §5): a POST or PATCH sent with an `Idempotency-Key` header is done
-- once; a retry with the same key gets the first answer again instead of a second effect
-- (draft-ietf-httpapi-idempotency-key-header). service/idempotency.py explains the protocol.
--
-- A key belongs to the API key that sent it: two clients may choose the same string. The row is
-- written in the transaction of the request itself: claimed (inserted without its answer) before
-- the handler runs, answered just before the commit. Nobody else ever sees a claimed row: the
-- unique index makes a second request with the same key wait for the first transaction, and then
-- find the answered row (commit) or none (rollback: the key is free again). Bookkeeping, not the
-- register: no audit row, and expired rows are deleted by the worker.
CREATE TABLE idempotency_keys (
    key_id          uuid NOT NULL REFERENCES api_keys (id),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- What the key was used for: the method and the path with its query (for the 422 of a reuse),
    -- and the SHA-256 of those, the If-Match header and the body's own SHA-256.
    request         text NOT NULL,
    fingerprint     bytea NOT NULL CHECK (length(fingerprint) = 32),
    created_at      timestamptz NOT NULL,
    -- Past this the key is free again (METREG_IDEMPOTENCY_TTL), whether or not the row is gone yet.
    expires_at      timestamptz NOT NULL CHECK (expires_at > created_at),
    -- The answer: status, Content-Type, the headers a client relies on (Location, ETag) and the
    -- body. Server errors are never kept (their transaction rolls back). A NULL body with a status
    -- is an answer that carried a secret shown only once (a new API key, a calendar feed's URL):
    -- only its hash is kept anywhere, so the answer cannot be repeated.
    status          smallint CHECK (status BETWEEN 200 AND 499),
    media_type      text,
    headers         jsonb NOT NULL DEFAULT '{}',
    body            bytea,
    PRIMARY KEY (key_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- The key of the transaction's principal, as the other principal_*() functions (0008).
CREATE FUNCTION principal_key() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('metreg.key_id', true), '')::uuid $$;

-- Each key sees and writes only its own rows, admins included: a key's idempotency keys are
-- nobody else's to replay. The worker only deletes expired rows.
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON idempotency_keys TO metreg_api USING (key_id = principal_key());
CREATE POLICY worker ON idempotency_keys TO metreg_worker USING (true);
GRANT SELECT, INSERT, UPDATE ON idempotency_keys TO metreg_api;
GRANT SELECT, DELETE ON idempotency_keys TO metreg_worker;

-- Claim `claimed_key` for the transaction's principal, or read the answer it already has.
--
-- One row comes back: claimed = true when the key is this transaction's now (new, or its record
-- had expired), the other columns null; claimed = false with the record of the request that used
-- it before. A transaction that holds the key uncommitted makes this wait, at most `wait_ms`
-- (then lock_not_available, 55P03): lock_timeout is set for this function alone (its SET clause
-- restores the caller's on the way out), so the handler's own lock waits are not bounded by it.
-- Each statement of a VOLATILE function takes a new snapshot: the SELECT sees the row that the
-- transaction waited for committed.
CREATE FUNCTION idempotency_claim(
    claimed_key text, claimed_request text, claimed_print bytea, claimed_at timestamptz, ttl interval, wait_ms integer
) RETURNS TABLE (claimed boolean, request text, fingerprint bytea, created_at timestamptz, status smallint,
                 media_type text, headers jsonb, body bytea)
    LANGUAGE plpgsql VOLATILE SET lock_timeout = 0 AS $$
BEGIN
    PERFORM set_config('lock_timeout', wait_ms::text, true);
    INSERT INTO idempotency_keys AS k (key_id, idempotency_key, request, fingerprint, created_at, expires_at)
    VALUES (principal_key(), claimed_key, claimed_request, claimed_print, claimed_at, claimed_at + ttl)
    ON CONFLICT (key_id, idempotency_key) DO UPDATE
        SET request = EXCLUDED.request, fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at, status = NULL, media_type = NULL, headers = '{}', body = NULL
        WHERE k.expires_at <= claimed_at;
    IF FOUND THEN
        RETURN QUERY SELECT true, NULL::text, NULL::bytea, NULL::timestamptz, NULL::smallint, NULL::text,
                            NULL::jsonb, NULL::bytea;
        RETURN;
    END IF;
    RETURN QUERY SELECT false, k.request, k.fingerprint, k.created_at, k.status, k.media_type, k.headers, k.body
        FROM idempotency_keys k WHERE k.key_id = principal_key() AND k.idempotency_key = claimed_key;
END $$;

-- A claimed row is answered before its transaction commits; were a path ever to commit without
-- answering, the commit fails (and takes the request's effect with it) rather than leave a key that
-- would replay nothing.
CREATE FUNCTION idempotency_answered() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM idempotency_keys
               WHERE key_id = NEW.key_id AND idempotency_key = NEW.idempotency_key AND status IS NULL) THEN
        RAISE EXCEPTION 'an idempotency key was claimed but not answered' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER answered AFTER INSERT OR UPDATE ON idempotency_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION idempotency_answered();
