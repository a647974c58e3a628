-- Who may open a work order, and whose document a correction may supersede.
--
-- Work orders. verification_requests and request_items had only 0008's permissive policies, whose
-- USING expression is also the check of a written row: a lab wrote any request naming itself (its
-- lab_id), for any enterprise, and any item of such a request. Lab L inserting a request of
-- enterprise B addressed to L made lab_sees_enterprise(B) true, and an item of it naming one of
-- B's instruments (0026 holds the item to the request's enterprise, which it was) made that
-- instrument one L "holds a request for" (lab_sees_instrument): L read it, its certificates,
-- history and notices, and 0028's `issuer` policy then accepted L's document answering that work
-- order as its own. A regulator likewise wrote requests and items for the enterprises of its
-- region. What the API does: a request and its items are inserted only by insert_request
-- (service/requests/queries.py), called only by CreateVerificationRequest, for an enterprise key
-- (its own enterprise, which the permissive policy holds it to) or an admin (any); nothing adds an
-- item to a request afterwards. Each table gets a RESTRICTIVE INSERT policy saying so, ANDed with
-- the permissive one as 0028's are; a lab still updates the requests addressed to it (accepting,
-- rejecting, and a result completing one) and their items (attach_result), which this leaves alone.
--
-- Corrections. A correction names the document it supersedes; 0026 holds that document to the
-- correction's instrument (certificates_superseded_fkey), but not to its issuer: a lab (or an
-- admin, or the tables' owner) could record, for an instrument it may write documents of, a
-- correction of another lab's certificate, and the public check then shows the other lab's
-- document as superseded. The API refuses it ("only the issuer of a document may correct it",
-- service/certificates/routes.py _corrected: the lab_id and issuer_region of the two documents
-- must be equal). Here: (supersedes, lab_id) references certificates (id, lab_id), and
-- (supersedes, issuer_region) references certificates (id, issuer_region). Every document has
-- exactly one of the two columns set (0005: CHECK ((lab_id IS NULL) = (issuer_region IS NOT
-- NULL))), and MATCH SIMPLE skips the key whose column is NULL: a lab's correction is checked by
-- the first (the document it supersedes is that lab's; an inspection record, lab_id NULL, never
-- matches), a regulator's inspection record by the second (the same region's; a lab's document,
-- issuer_region NULL, never matches), and a document that corrects nothing by neither. Each key
-- needs a unique index on the pair it references, which the primary key makes trivially true.
--
-- Rows already there: policies judge writes, not rows (PostgreSQL checks none when a policy is
-- created). The API never let a lab or a regulator create a request (CreateVerificationRequest is
-- an admin's or the enterprise's), and the audit trail names the role of each insert's writer:
-- SELECT * FROM audit_log WHERE entity IN ('verification_requests', 'request_items') AND operation
-- = 'insert' AND actor_role NOT IN ('admin', 'enterprise', 'system') finds any SQL run as the API's
-- role that did. The keys are checked against every row when added: supersedes is written only by
-- record_result, with the check of _corrected above since corrections exist (the generated register,
-- imports and the demo write none), so no row breaks them; a database that somehow holds one stops
-- here, at the key PostgreSQL names with the row's values, with nothing of this migration applied.
--
-- Locks. Creating a policy takes ACCESS EXCLUSIVE on its table until COMMIT; the two indexes take
-- SHARE on certificates, and adding the keys SHARE ROW EXCLUSIVE while they check the rows (the
-- corrections, through the new indexes). Run with the API and the worker stopped, as the deploy
-- order says, none of it waits for or blocks a request.

CREATE POLICY requester ON verification_requests AS RESTRICTIVE FOR INSERT TO metreg_api
    WITH CHECK (principal_role() IN ('admin', 'enterprise'));
CREATE POLICY requester ON request_items AS RESTRICTIVE FOR INSERT TO metreg_api
    WITH CHECK (principal_role() IN ('admin', 'enterprise'));

CREATE UNIQUE INDEX certificates_id_lab ON certificates (id, lab_id);
CREATE UNIQUE INDEX certificates_id_issuer_region ON certificates (id, issuer_region);
ALTER TABLE certificates
    ADD CONSTRAINT certificates_corrected_lab_fkey FOREIGN KEY (supersedes, lab_id)
        REFERENCES certificates (id, lab_id),
    ADD CONSTRAINT certificates_corrected_region_fkey FOREIGN KEY (supersedes, issuer_region)
        REFERENCES certificates (id, issuer_region);
