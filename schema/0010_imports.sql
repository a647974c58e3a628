-- Bulk imports of an enterprise's ledger (issue 6). Each import is kept: who, when, which file
-- (its SHA-256) and what it did. The audit trail records an import as one entry, the
-- instrument_imports row; each instrument it created or changed names the import in its own
-- history (instrument_events.detail ->> 'import_id'), with the fields it changed and their old
-- values. A per-row audit entry, computed and chained one at a time under the audit lock, would
-- cap imports at a fraction of the 50,000 rows a second design.md §9 asks for.

CREATE TABLE instrument_imports (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    enterprise_id uuid NOT NULL REFERENCES enterprises (id),
    file_name     text CHECK (length(file_name) <= 255),
    file_sha256   bytea NOT NULL CHECK (length(file_sha256) = 32),
    format        text NOT NULL CHECK (format IN ('csv', 'xlsx')),
    encoding      text,
    rows          integer NOT NULL CHECK (rows >= 0),
    created       integer NOT NULL CHECK (created >= 0),
    updated       integer NOT NULL CHECK (updated >= 0),
    unchanged     integer NOT NULL CHECK (unchanged >= 0),
    actor_key_id  uuid,
    actor_role    text,
    request_id    text,
    imported_at   timestamptz NOT NULL,
    CHECK (created + updated + unchanged = rows)
);
CREATE INDEX instrument_imports_enterprise ON instrument_imports (enterprise_id, imported_at DESC, id DESC);

GRANT INSERT ON instrument_imports TO metreg_api;

ALTER TABLE instrument_imports ENABLE ROW LEVEL SECURITY;
CREATE POLICY principal ON instrument_imports TO metreg_api USING (principal_sees(enterprise_id));

CREATE CONSTRAINT TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON instrument_imports
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_record();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON instrument_imports
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

-- The instruments an import writes are audited through its entry: the import sets metreg.import_id
-- for its own transaction (set_config(…, true)), after inserting that entry.
DROP TRIGGER audit ON instruments;
CREATE CONSTRAINT TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON instruments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (coalesce(current_setting('metreg.import_id', true), '') = '')
    EXECUTE FUNCTION audit_record();
