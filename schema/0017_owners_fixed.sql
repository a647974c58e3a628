-- A row never changes owner. Row-level security checks a written row against its policy's USING
-- expression (no policy has a WITH CHECK of its own), and that expression has branches besides the
-- owner's: a lab sees an instrument through the request it holds, an admin sees everything. Such a
-- principal passed the check with the owner column pointed at another tenant, so that one UPDATE
-- (a bug, an injection) would have handed an instrument, a request or a key to someone else.
-- Nothing in metreg moves a row between owners, and now nothing can: triggers bind every role,
-- the worker's and the tables' owner included, where policies and grants bind only some.
--
-- The columns are those that say whose a row is (enterprise, lab, region, a key's scope) or name
-- the parent row its policy goes through. Not here, because something else holds them already:
-- certificates are immutable but for a one-time revocation (0005); instrument imports and the audit
-- trail are append-only; an idempotency key's policy is key_id = principal_key() for every
-- principal, so its check pins key_id. An enterprise's region_code is not an owner but the
-- enterprise's own attribute, which an admin may change (PATCH /v1/enterprises/{id}).
--
-- Each trigger is BEFORE (its refusal comes ahead of foreign-key and policy checks, whichever
-- would also object) and has a WHEN clause, so that an update leaving the columns alone, which is
-- every update metreg makes, never calls the function.
CREATE FUNCTION owner_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row CONSTANT jsonb := to_jsonb(OLD);
    new_row CONSTANT jsonb := to_jsonb(NEW);
    owner_column text;
BEGIN
    FOREACH owner_column IN ARRAY TG_ARGV LOOP
        IF old_row -> owner_column IS DISTINCT FROM new_row -> owner_column THEN
            RAISE EXCEPTION '%.% never changes: a row stays with its owner', TG_TABLE_NAME, owner_column
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    RETURN NEW;
END $$;

CREATE TRIGGER owner_fixed BEFORE UPDATE ON instruments FOR EACH ROW
    WHEN (OLD.enterprise_id IS DISTINCT FROM NEW.enterprise_id)
    EXECUTE FUNCTION owner_fixed('enterprise_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON verification_requests FOR EACH ROW
    WHEN ((OLD.enterprise_id, OLD.lab_id) IS DISTINCT FROM (NEW.enterprise_id, NEW.lab_id))
    EXECUTE FUNCTION owner_fixed('enterprise_id', 'lab_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON request_items FOR EACH ROW
    WHEN ((OLD.request_id, OLD.instrument_id) IS DISTINCT FROM (NEW.request_id, NEW.instrument_id))
    EXECUTE FUNCTION owner_fixed('request_id', 'instrument_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON instrument_events FOR EACH ROW
    WHEN (OLD.instrument_id IS DISTINCT FROM NEW.instrument_id)
    EXECUTE FUNCTION owner_fixed('instrument_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON notices FOR EACH ROW
    WHEN ((OLD.enterprise_id, OLD.instrument_id) IS DISTINCT FROM (NEW.enterprise_id, NEW.instrument_id))
    EXECUTE FUNCTION owner_fixed('enterprise_id', 'instrument_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON deliveries FOR EACH ROW
    WHEN (OLD.notice_id IS DISTINCT FROM NEW.notice_id)
    EXECUTE FUNCTION owner_fixed('notice_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON delivery_attempts FOR EACH ROW
    WHEN (OLD.delivery_id IS DISTINCT FROM NEW.delivery_id)
    EXECUTE FUNCTION owner_fixed('delivery_id');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON webhooks FOR EACH ROW
    WHEN ((OLD.enterprise_id, OLD.region_code) IS DISTINCT FROM (NEW.enterprise_id, NEW.region_code))
    EXECUTE FUNCTION owner_fixed('enterprise_id', 'region_code');
CREATE TRIGGER owner_fixed BEFORE UPDATE ON calendar_feeds FOR EACH ROW
    WHEN (OLD.enterprise_id IS DISTINCT FROM NEW.enterprise_id)
    EXECUTE FUNCTION owner_fixed('enterprise_id');
-- A key's scope is what it may do: rotation makes a new key rather than change an old one's.
CREATE TRIGGER owner_fixed BEFORE UPDATE ON api_keys FOR EACH ROW
    WHEN ((OLD.role, OLD.enterprise_id, OLD.lab_id, OLD.region_code)
          IS DISTINCT FROM (NEW.role, NEW.enterprise_id, NEW.lab_id, NEW.region_code))
    EXECUTE FUNCTION owner_fixed('role', 'enterprise_id', 'lab_id', 'region_code');
