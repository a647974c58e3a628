-- Who may sign a result document, and whose key a rotation may name.
--
-- Row-level security held each principal to the rows it may see, and a write's new row to the same
-- expression (no policy had a WITH CHECK of its own, 0017): whoever saw a row could write one like
-- it. For certificates (检定证书, 检定结果通知书, calibration certificates and inspection records:
-- the legal evidence) that let an enterprise insert, for its own instrument, a document in any
-- lab's name, and a lab one in another lab's name for an instrument it sees; an enterprise could
-- also revoke its own instrument's certificates, the anonymous certificate check add a correction
-- of the certificate it checks, and any key write someone else's role or key as a document's
-- recorder or revoker.
--
-- What the API does (service/certificates/routes.py), which the database now holds every API
-- principal to:
--
-- * Recording (RecordResult, record_result and _issuer): an enterprise is refused; a lab records
--   under its own lab_id only; a regulator records only in-service inspection records
--   (inspection_record: lab_id NULL, issuer_region its own region) for an enterprise of its
--   region; an admin records on a lab's behalf (lab_id given) or an inspection record for the
--   enterprise's region. recorded_by_key and recorded_by_role are the recording principal's. The
--   request a result answers is one the issuing lab holds (claim_item looks among that lab's
--   requests only); an inspection record answers none.
-- * Revoking (RevokeCertificate, and a failing result voiding the governing certificate,
--   _void_current): the issuing lab, a lab recording a failure for an instrument it holds a
--   request for, a regulator of the enterprise's region, or an admin; never an enterprise.
--   revoked_by_key and revoked_by_role are the revoking principal's.
-- * DELETE and TRUNCATE stay refused for every role, the tables' owner included (0005's trigger;
--   neither the API nor the worker is granted DELETE), and so does every UPDATE but the one-time
--   revocation (0005's trigger).
--
-- Each rule is a RESTRICTIVE policy, ANDed with the permissive `principal` policy of 0008 (which
-- still decides which rows a principal sees and writes at all): a restrictive policy can only take
-- away. The revocation's is a WITH CHECK only, so that it judges the revoked row as written and
-- leaves alone what a principal may lock (SELECT ... FOR UPDATE asks the USING of UPDATE policies).
--
-- The other evidence a result writes, reviewed the same way:
--
-- * A request item is done when its certificate_id is set, which only attach_result does, in
--   record_result, for a lab or an admin (a regulator's inspection answers no request); the only
--   other update of items, withdraw_items (an enterprise or an admin scrapping or replacing the
--   instrument), touches those still waiting (certificate_id IS NULL), and items are inserted
--   without a result (insert_request). So an item with a result is written only by a
--   lab (of its own requests: the permissive policy) or an admin: neither may an enterprise mark
--   its item done with a document of its choosing nor undo a result (USING: the done item is not
--   even there to update for it).
-- * History events: result_recorded and certificate_revoked are written only by record_result and
--   the revocation, so only by an admin, a lab or a regulator; an enterprise writes its
--   instruments' other events (registration, changes, imports, seal, scrap, replace). And no event
--   is ever updated by metreg: the history is appended to (service/history/queries.py
--   record_event, the import's and the generated register's set-based inserts) and read, so the
--   API loses UPDATE on it. Until now an enterprise could rewrite its instruments' history, which
--   the audit trail does not cover, after the fact.
--
-- Rows already there: policies judge writes, not rows, and PostgreSQL checks none of them when a
-- policy is created. The API never wrote a row these refuse (it refused the same principals
-- before the database did); only SQL run as metreg_api outside the API's code could have, and the
-- audit trail names the key and role of every certificate's and request item's insert and update
-- (actor_key_id, actor_role, set by the authentication statement, not by the writer). Such a
-- certificate could not be removed here anyway: certificates are never deleted, by anyone.
--
-- Keys. A rotation links the old key to its successor (rotated_to), and revoke_key revokes the
-- whole chain, since whoever held a leaked key may have rotated it. rotated_to was a plain key:
-- any key may update the keys of its own scope (the policy of 0008), so an enterprise could point
-- one of its keys at another tenant's key, and an admin revoking the first then revoked the other
-- too. A successor is of the same role and scope (rotate_key copies them, and they never change
-- afterwards, 0017). One composite key on (rotated_to, role, enterprise_id, lab_id, region_code)
-- cannot say so: each role leaves some of those columns NULL, and MATCH SIMPLE skips the check of
-- any row with a NULL in it (MATCH FULL refuses such rows outright). But each role carries exactly
-- its own scope column (0001's CHECKs: enterprise_id for an enterprise, lab_id for a lab,
-- region_code for a regulator, none for an admin), so "the same role and scope" is "the same role,
-- and the same value in whichever scope column the key has": four keys, (rotated_to, role),
-- (rotated_to, enterprise_id), (rotated_to, lab_id) and (rotated_to, region_code), each
-- referencing the same pair of the successor, the last three skipped where the key has no such
-- column. Each needs a unique index on (id, column), which the primary key makes trivially true.
-- The plain key on rotated_to, which the role's implies, goes.
--
-- Declarative rather than a trigger looking the successor up: the check is PostgreSQL's own, binds
-- every role (the tables' owner too), sees through row-level security without a SECURITY DEFINER
-- function, runs only where rotated_to is written (a rotation), and no function has to be kept in
-- step with the columns. Nor a stored generated column holding the scope as one NOT NULL value,
-- with one composite key on it (tried first): api_keys has a BEFORE UPDATE trigger (owner_fixed,
-- 0017), and with one PostgreSQL 15 treats every stored generated column as updated by every
-- UPDATE, the trigger being free to change what it is computed from (seen on a copy of the table,
-- with the trigger and without). In a unique index, that column made
-- every update of a key, the key check's last_used_at among them, a key update: its row lock
-- (FOR UPDATE rather than FOR NO KEY UPDATE) conflicts with the KEY SHARE lock a foreign key takes
-- on the referenced key, so a request's key check waited for any transaction of the same key
-- holding an Idempotency-Key claim (tests/api/test_idempotency.py caught it). The four indexes are
-- on columns no UPDATE of metreg sets.
--
-- Cross-scope links already there stop the migration, named, before anything is changed.
--
-- Locks: creating a policy takes ACCESS EXCLUSIVE on its table until COMMIT, and so does dropping
-- the plain key of api_keys. api_keys comes first, locked at once at full strength: every API
-- transaction starts by reading and writing it (the key check) and then reads the other tables,
-- so that once this holds it no request holds it while waiting for this on another table (which,
-- the other way round, would be a deadlock). Requests wait at their key check meanwhile, for the length of the
-- migration: nothing here reads a table but api_keys (creating a policy reads no rows), and with
-- 5,000 keys, half of them rotated, the whole run took 40 to 65 ms (load average about 3).


-- Keys: a successor of the same role and scope.
LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    links integer;
    listed text;
BEGIN
    SELECT count(*), string_agg(line, E'\n' ORDER BY n) FILTER (WHERE n <= 20)
    INTO links, listed
    FROM (SELECT format('  key %s (%s) -> key %s (%s)',
                        k.id, concat_ws(' ', k.role, coalesce(k.enterprise_id::text, k.lab_id::text, k.region_code)),
                        s.id, concat_ws(' ', s.role, coalesce(s.enterprise_id::text, s.lab_id::text, s.region_code)))
                     AS line,
                 row_number() OVER (ORDER BY k.created_at, k.id) AS n
          FROM api_keys k JOIN api_keys s ON s.id = k.rotated_to
          WHERE (k.role, k.enterprise_id, k.lab_id, k.region_code)
                IS DISTINCT FROM (s.role, s.enterprise_id, s.lab_id, s.region_code)) AS crossed;
    IF links > 0 THEN
        RAISE EXCEPTION '%', format('keys rotated to a key of another role or scope: %s. No rotation made these '
                                    'links (a rotation copies role and scope), and through them revoking a key '
                                    'revoked the other too. Clear each (UPDATE api_keys SET rotated_to = NULL '
                                    'WHERE id = ...; audited as sql), check whether the other key was revoked '
                                    'through it, then run metreg migrate again.', links)
                             || E'\n' || listed || CASE WHEN links > 20 THEN format(E'\n  and %s more', links - 20) ELSE '' END
            USING ERRCODE = 'foreign_key_violation';
    END IF;
END $$;

CREATE UNIQUE INDEX api_keys_id_role ON api_keys (id, role);
CREATE UNIQUE INDEX api_keys_id_enterprise ON api_keys (id, enterprise_id);
CREATE UNIQUE INDEX api_keys_id_lab ON api_keys (id, lab_id);
CREATE UNIQUE INDEX api_keys_id_region ON api_keys (id, region_code);
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_successor_role_fkey FOREIGN KEY (rotated_to, role) REFERENCES api_keys (id, role),
    ADD CONSTRAINT api_keys_successor_enterprise_fkey FOREIGN KEY (rotated_to, enterprise_id)
        REFERENCES api_keys (id, enterprise_id),
    ADD CONSTRAINT api_keys_successor_lab_fkey FOREIGN KEY (rotated_to, lab_id) REFERENCES api_keys (id, lab_id),
    ADD CONSTRAINT api_keys_successor_region_fkey FOREIGN KEY (rotated_to, region_code)
        REFERENCES api_keys (id, region_code),
    DROP CONSTRAINT api_keys_rotated_to_fkey;


-- Certificates: who records one.
CREATE POLICY issuer ON certificates AS RESTRICTIVE FOR INSERT TO metreg_api WITH CHECK (
    recorded_by_role = principal_role() AND recorded_by_key IS NOT DISTINCT FROM principal_key()
    AND CASE principal_role()
            WHEN 'admin' THEN true
            WHEN 'lab' THEN lab_id = principal_lab()
            WHEN 'regulator' THEN lab_id IS NULL AND issuer_region = principal_region()
            ELSE false
        END
    -- A lab's result answers the lab's own work order, if any (as the principal sees requests: a
    -- lab its own, an admin all).
    AND (request_id IS NULL OR EXISTS (SELECT 1 FROM verification_requests r
                                       WHERE r.id = certificates.request_id AND r.lab_id = certificates.lab_id))
);

-- Certificates: who revokes one (the only UPDATE 0005's trigger lets through).
CREATE POLICY revoker ON certificates AS RESTRICTIVE FOR UPDATE TO metreg_api WITH CHECK (
    principal_role() IN ('admin', 'lab', 'regulator')
    AND revoked_by_role = principal_role() AND revoked_by_key IS NOT DISTINCT FROM principal_key()
);

-- Request items: only a lab or an admin gives one its result, or touches one that has it.
CREATE POLICY result_giver ON request_items AS RESTRICTIVE FOR INSERT TO metreg_api
    WITH CHECK (certificate_id IS NULL OR principal_role() IN ('admin', 'lab'));
CREATE POLICY result_keeper ON request_items AS RESTRICTIVE FOR UPDATE TO metreg_api
    USING (certificate_id IS NULL OR principal_role() IN ('admin', 'lab'))
    WITH CHECK (certificate_id IS NULL OR principal_role() IN ('admin', 'lab'));

-- History: results and revocations are written by those who record and revoke documents; no event
-- is ever rewritten.
CREATE POLICY result_writer ON instrument_events AS RESTRICTIVE FOR INSERT TO metreg_api WITH CHECK (
    kind NOT IN ('result_recorded', 'certificate_revoked') OR principal_role() IN ('admin', 'lab', 'regulator')
);
REVOKE UPDATE ON instrument_events FROM metreg_api;
