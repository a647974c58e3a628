-- References the worker follows are held to their row's owner. The worker reads every tenant's
-- rows (it has no principal), so a reference an enterprise could point at another tenant's row
-- made the worker act on that row for it: a delivery of A's notice aimed at B's webhook was signed
-- with B's secret and posted to whatever target A wrote; an instrument of A naming B's certificate
-- as its current one put B's certificate number in the notice the worker sent to A. Row-level
-- security checks the row written (A's delivery, A's instrument), not the row it names.
--
-- A delivery's webhook and target are decided once, when the worker creates the delivery from
-- the notice's owner's webhooks (service/deliveries/queries.py create_targets_of); nothing in
-- metreg changes them later. They join 0017's owner columns: no role changes them.
--
-- CREATE OR REPLACE TRIGGER rather than DROP and CREATE: a trigger's drop takes ACCESS EXCLUSIVE
-- on deliveries (blocking the API's reads of them until this commits), its replacement only what
-- CREATE TRIGGER takes (SHARE ROW EXCLUSIVE: reads go on, the worker's writes wait).
CREATE OR REPLACE TRIGGER owner_fixed BEFORE UPDATE ON deliveries FOR EACH ROW
    WHEN ((OLD.notice_id, OLD.webhook_id, OLD.target) IS DISTINCT FROM (NEW.notice_id, NEW.webhook_id, NEW.target))
    EXECUTE FUNCTION owner_fixed('notice_id', 'webhook_id', 'target');

-- Nor may the API write a delivery in the first place: only the worker creates them, and an
-- enterprise inserting one for its own notice passed the policy with any webhook and target.
REVOKE INSERT ON deliveries FROM metreg_api;

-- An instrument's current certificate is one of its own: the pair (certificate, instrument)
-- references the certificate's (id, instrument_id). A foreign key needs a unique constraint on
-- exactly the columns it references, and the primary key on id alone does not serve, hence
-- certificates_id_instrument. It is worth its index: certificates are written once each (a lab's
-- result, a few per instrument and year) and their key never changes, so it costs one index entry
-- per result; in exchange the check is PostgreSQL's own, binds every role (the worker, the
-- tables' owner), sees through row-level security and runs only when current_certificate_id
-- changes, where a trigger doing the same would have to be written, owned and tested to match.
ALTER TABLE certificates ADD CONSTRAINT certificates_id_instrument UNIQUE (id, instrument_id);

-- A replacement and the instrument it replaces belong to the same enterprise: both links
-- reference instruments (id, enterprise_id), through the unique index instruments_id_enterprise
-- of 0016. MATCH SIMPLE (the default) leaves a row whose link is NULL unchecked, so registering
-- or importing an instrument (links NULL) costs nothing more; and the check runs only when a link
-- is written (enterprise_id never changes, 0017): twice per replace operation, for the
-- successor's replaces and the old instrument's replaced_by.
--
-- Each new key replaces the plain one of 0005 under the same name (the drops of one ALTER TABLE
-- run before its additions). The new keys are checked against the rows already there as they are
-- added: the app never wrote otherwise, so a populated database migrates, and one that somehow
-- holds a cross-tenant link fails here, naming the constraint, with nothing applied. NOT VALID
-- followed by VALIDATE CONSTRAINT would lower nothing in one transaction: dropping the old keys
-- takes ACCESS EXCLUSIVE on instruments and certificates (as does the UNIQUE above), held until
-- COMMIT whatever comes after; the validation is one scan of instruments per key, joined to the
-- rows its links name.
ALTER TABLE instruments
    DROP CONSTRAINT instruments_current_certificate_id_fkey,
    DROP CONSTRAINT instruments_replaces_fkey,
    DROP CONSTRAINT instruments_replaced_by_fkey,
    ADD CONSTRAINT instruments_current_certificate_id_fkey FOREIGN KEY (current_certificate_id, id)
        REFERENCES certificates (id, instrument_id),
    ADD CONSTRAINT instruments_replaces_fkey FOREIGN KEY (replaces, enterprise_id)
        REFERENCES instruments (id, enterprise_id),
    ADD CONSTRAINT instruments_replaced_by_fkey FOREIGN KEY (replaced_by, enterprise_id)
        REFERENCES instruments (id, enterprise_id);
