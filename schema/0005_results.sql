-- What happened to instruments: work orders to labs, the result documents labs and regulators
-- issue, and every lifecycle event. Certificates are evidence: the database itself refuses to
-- change or delete them.

-- How many working days a lab has to complete an accepted request (no national figure exists:
-- domain.md §1.4, so it is the lab's setting).
ALTER TABLE labs ADD COLUMN sla_working_days integer NOT NULL DEFAULT 10
    CHECK (sla_working_days BETWEEN 1 AND 250);

CREATE TABLE verification_requests (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    enterprise_id uuid NOT NULL REFERENCES enterprises (id),
    lab_id        uuid NOT NULL REFERENCES labs (id),
    note          text CHECK (length(note) <= 2000),
    status        text NOT NULL DEFAULT 'submitted' CHECK (status IN (
                      'submitted', 'accepted', 'rejected', 'cancelled', 'completed')),
    -- Why it was rejected or cancelled.
    reason        text CHECK (length(reason) BETWEEN 1 AND 2000),
    accepted_on   date,
    due_by        date,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- Accepted requests have their dates; a cancelled one keeps them as history.
    CHECK (status NOT IN ('accepted', 'completed') OR (accepted_on IS NOT NULL AND due_by IS NOT NULL)),
    CHECK ((status IN ('rejected', 'cancelled')) = (reason IS NOT NULL)),
    CHECK (due_by IS NULL OR due_by > accepted_on)
);
CREATE INDEX verification_requests_enterprise ON verification_requests (enterprise_id, created_at DESC, id DESC);
CREATE INDEX verification_requests_lab ON verification_requests (lab_id, created_at DESC, id DESC);
CREATE INDEX verification_requests_all ON verification_requests (created_at DESC, id DESC);

CREATE TABLE certificates (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instrument_id      uuid NOT NULL REFERENCES instruments (id),
    enterprise_id      uuid NOT NULL REFERENCES enterprises (id),
    -- The issuer: a lab, or for an in-service inspection record the regulator's region.
    lab_id             uuid REFERENCES labs (id),
    issuer_region      text CHECK (issuer_region ~ '^([0-9]{2}){1,3}$'),
    request_id         uuid REFERENCES verification_requests (id),
    kind               text NOT NULL CHECK (kind IN (
                           'verification_certificate', 'result_notice', 'calibration_certificate',
                           'inspection_record')),
    number             text NOT NULL CHECK (length(number) BETWEEN 1 AND 100),
    outcome            text NOT NULL CHECK (outcome IN ('pass', 'fail')),
    performed_on       date NOT NULL,
    issued_on          date NOT NULL,
    cycle_months       integer CHECK (cycle_months BETWEEN 1 AND 1200),
    valid_until        date,
    failed_items       text[] NOT NULL DEFAULT '{}',
    as_found           jsonb NOT NULL DEFAULT '[]',
    as_left            jsonb NOT NULL DEFAULT '[]',
    regulation_applied text,
    standards_used     text[] NOT NULL DEFAULT '{}',
    signatories        jsonb NOT NULL DEFAULT '{}',
    conclusion         text,
    -- What recording it did to the instrument, decided once when it was recorded.
    legal_effect       text NOT NULL CHECK (legal_effect IN ('governs', 'voids', 'history', 'none')),
    effect_note        text NOT NULL,
    supersedes         uuid REFERENCES certificates (id),
    correction_reason  text CHECK (length(correction_reason) BETWEEN 1 AND 2000),
    content_sha256     text NOT NULL CHECK (content_sha256 ~ '^[0-9a-f]{64}$'),
    recorded_by_key    uuid,
    recorded_by_role   text NOT NULL,
    recorded_at        timestamptz NOT NULL,
    -- The only facts that may be added later, once: a revocation (or a void by a later failure).
    revoked_on         date,
    revoked_reason     text,
    revoked_at         timestamptz,
    revoked_by_key     uuid,
    revoked_by_role    text,
    CHECK ((kind = 'inspection_record') = (lab_id IS NULL)),
    CHECK ((lab_id IS NULL) = (issuer_region IS NOT NULL)),
    CHECK (performed_on <= issued_on),
    -- A validity comes with a pass, or with a calibration found out of tolerance and adjusted.
    CHECK (valid_until IS NULL OR ((outcome = 'pass' OR kind = 'calibration_certificate')
                                   AND valid_until >= performed_on)),
    CHECK (kind <> 'result_notice' OR (outcome = 'fail' AND cardinality(failed_items) > 0)),
    CHECK (kind <> 'verification_certificate' OR outcome = 'pass'),
    CHECK ((supersedes IS NULL) = (correction_reason IS NULL)),
    CHECK ((revoked_on IS NULL) = (revoked_at IS NULL) AND (revoked_on IS NULL) = (revoked_reason IS NULL))
);
CREATE UNIQUE INDEX certificates_lab_number ON certificates (lab_id, number) WHERE lab_id IS NOT NULL;
CREATE UNIQUE INDEX certificates_inspection_number ON certificates (issuer_region, number) WHERE lab_id IS NULL;
-- A certificate is corrected at most once; the correction may itself be corrected.
CREATE UNIQUE INDEX certificates_supersedes ON certificates (supersedes) WHERE supersedes IS NOT NULL;
CREATE INDEX certificates_instrument ON certificates (instrument_id, performed_on DESC, recorded_at DESC, id DESC);

CREATE FUNCTION certificates_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    revocation CONSTANT text[] := '{revoked_on,revoked_reason,revoked_at,revoked_by_key,revoked_by_role}';
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'certificates are evidence: % is refused (record a correction instead)', TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL
       OR (to_jsonb(NEW) - revocation) IS DISTINCT FROM (to_jsonb(OLD) - revocation) THEN
        RAISE EXCEPTION 'certificate % is immutable: only a one-time revocation may be added', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER certificates_immutable BEFORE UPDATE OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION certificates_refuse_change();
CREATE TRIGGER certificates_no_truncate BEFORE TRUNCATE ON certificates
    FOR EACH STATEMENT EXECUTE FUNCTION certificates_refuse_change();

CREATE TABLE request_items (
    request_id     uuid NOT NULL REFERENCES verification_requests (id),
    instrument_id  uuid NOT NULL REFERENCES instruments (id),
    position       integer NOT NULL,
    certificate_id uuid REFERENCES certificates (id),
    -- Scrapped or replaced before its result: the item no longer waits.
    withdrawn_on   date,
    PRIMARY KEY (request_id, instrument_id)
);
-- Which labs may see an instrument, and which open request a result belongs to.
CREATE INDEX request_items_instrument ON request_items (instrument_id);

-- The document that governs the instrument's status now (a passing certificate, or the notice
-- that failed it); validity that came from a certificate is marked as such.
ALTER TABLE instruments
    ADD COLUMN current_certificate_id uuid REFERENCES certificates (id),
    ADD COLUMN replaces uuid REFERENCES instruments (id),
    ADD COLUMN replaced_by uuid REFERENCES instruments (id);
ALTER TABLE instruments DROP CONSTRAINT instruments_validity_source_check;
ALTER TABLE instruments ADD CONSTRAINT instruments_validity_source_check
    CHECK (validity_source IN ('computed', 'printed', 'certificate'));

-- Every registration, change, result, revocation and lifecycle step, newest last by seq.
CREATE TABLE instrument_events (
    seq                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instrument_id         uuid NOT NULL REFERENCES instruments (id),
    kind                  text NOT NULL CHECK (kind IN (
                              'registered', 'updated', 'result_recorded', 'certificate_revoked',
                              'sealed', 'unsealed', 'scrapped', 'replaced', 'failed', 'returned_to_service')),
    effective_on          date,
    from_lifecycle        text,
    to_lifecycle          text,
    certificate_id        uuid REFERENCES certificates (id),
    related_instrument_id uuid REFERENCES instruments (id),
    reason                text,
    detail                jsonb NOT NULL DEFAULT '{}',
    actor_key_id          uuid,
    actor_role            text,
    occurred_at           timestamptz NOT NULL
);
CREATE INDEX instrument_events_instrument ON instrument_events (instrument_id, seq DESC);

INSERT INTO instrument_events (instrument_id, kind, to_lifecycle, detail, occurred_at)
SELECT id, 'registered', lifecycle, '{"backfilled": true}', created_at FROM instruments ORDER BY created_at, id;
