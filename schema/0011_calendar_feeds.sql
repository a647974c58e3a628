-- Calendar feeds (issue 7): an enterprise's due dates as an iCalendar feed that calendar apps
-- subscribe to. Calendar apps cannot send an API key, so the feed's URL carries a secret token
-- instead; only its SHA-256 is stored (like a key's secret) and the token is shown once, when the
-- feed is made. Revoking a feed ends its URL for good.
--
-- A feed is read under a principal of its own, role `calendar`, set per transaction with the
-- token's hash (metreg.calendar_token, hex). It sees the one enterprise the feed belongs to and
-- that enterprise's instruments, nothing else: it carries no metreg.enterprise_id, so none of the
-- enterprise's other rows (certificates, notices, keys, webhooks, audit) are visible to it.

CREATE TABLE calendar_feeds (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    enterprise_id   uuid NOT NULL REFERENCES enterprises (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_sha256    bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at      timestamptz NOT NULL,
    -- The key that made it (an enterprise's own, or an admin's).
    created_by      uuid REFERENCES api_keys (id),
    revoked_at      timestamptz,
    -- When a calendar app last read it, to the minute: feeds nobody reads any more can be revoked.
    last_fetched_at timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE INDEX calendar_feeds_enterprise ON calendar_feeds (enterprise_id, created_at DESC, id DESC);

GRANT INSERT, UPDATE ON calendar_feeds TO metreg_api;

-- The enterprise of the feed whose token the transaction presents, while the feed stands. Runs as
-- the owner: the calendar principal cannot read calendar_feeds itself.
CREATE FUNCTION calendar_enterprise() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT enterprise_id FROM calendar_feeds
    WHERE principal_role() = 'calendar' AND revoked_at IS NULL
      AND token_sha256 = decode(nullif(current_setting('metreg.calendar_token', true), ''), 'hex')
$$;

-- Opening a feed: its id and enterprise (no row: unknown or revoked), recording the read at most
-- once a minute and never waiting for another read of the same feed that is recording it.
CREATE FUNCTION calendar_feed_opened(fetched_at timestamptz) RETURNS TABLE (id uuid, enterprise_id uuid)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH feed AS (
        SELECT f.id, f.enterprise_id FROM calendar_feeds f
        WHERE principal_role() = 'calendar' AND f.revoked_at IS NULL
          AND f.token_sha256 = decode(nullif(current_setting('metreg.calendar_token', true), ''), 'hex')
    ), touched AS (
        UPDATE calendar_feeds SET last_fetched_at = fetched_at
        WHERE calendar_feeds.id = (SELECT f.id FROM calendar_feeds f JOIN feed USING (id)
                                   WHERE f.last_fetched_at IS NULL OR f.last_fetched_at < fetched_at - interval '1 minute'
                                   FOR UPDATE OF f SKIP LOCKED)
    )
    SELECT id, enterprise_id FROM feed
$$;

-- Feeds are managed like an enterprise's keys: by the enterprise and by admins, not by regulators.
ALTER TABLE calendar_feeds ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON calendar_feeds TO metreg_api USING (
    principal_role() = 'admin' OR (principal_role() = 'enterprise' AND enterprise_id = principal_enterprise())
);

-- What a feed reads: its enterprise (name, time zone, reminder days) and its instruments. The
-- lookup is a subquery of its own so that PostgreSQL runs it once per statement, not once per row;
-- any other role stops at its first test.
CREATE POLICY calendar ON enterprises FOR SELECT TO metreg_api
    USING (principal_role() = 'calendar' AND id = (SELECT calendar_enterprise()));
CREATE POLICY calendar ON instruments FOR SELECT TO metreg_api
    USING (principal_role() = 'calendar' AND enterprise_id = (SELECT calendar_enterprise()));

-- The tables below a visible instrument or notice named the one role they kept out; with a
-- principal that sees instruments but nothing else they name those who may read instead.
ALTER POLICY principal ON instrument_events USING (
    principal_role() IN ('admin', 'enterprise', 'regulator', 'lab')
    AND EXISTS (SELECT 1 FROM instruments i WHERE i.id = instrument_id)
);
ALTER POLICY principal ON deliveries USING (
    principal_role() IN ('admin', 'enterprise', 'regulator')
    AND EXISTS (SELECT 1 FROM notices n WHERE n.id = notice_id)
);

-- Audited like the keys: the token's hash and the read bookkeeping are left out of the trail
-- (a read alone writes no audit row), and a regulator does not read an enterprise's feeds there.
CREATE CONSTRAINT TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON calendar_feeds
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_record('token_sha256', 'last_fetched_at');

ALTER POLICY principal ON audit_log USING (
    principal_role() = 'admin' OR enterprise_id = principal_enterprise()
    OR (principal_role() = 'regulator' AND starts_with(region_code, principal_region())
        AND (entity NOT IN ('webhooks', 'api_keys', 'calendar_feeds')
             OR enterprise_id IS NULL AND region_code = principal_region()))
);
