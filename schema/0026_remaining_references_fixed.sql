-- The last references a tenant's row could point at another tenant's row: a request item's
-- instrument, a certificate's instrument, request and corrected document, and a history event's
-- related instrument. Row-level security checks the row written, not the row it names, and the
-- API may insert all three tables (an enterprise for its own requests and instruments, a lab for
-- the requests addressed to it and their instruments, a regulator in its region, an admin
-- anywhere). The worst was a read: an item of A's request naming B's instrument, or a certificate
-- of A naming B's instrument in lab L's name, made B's instrument one that lab L "holds or held a
-- request for, or issued a document for" (lab_sees_instrument, 0008), and lab L then read B's
-- instrument and all of B's certificates for it. The rest put another tenant's instrument in an
-- instrument's history as its replacement, or another instrument's document on record as the one
-- a correction corrects, or another tenant's work order as the one a result answers.
--
-- Each becomes a composite key, as 0016, 0020, 0021 and 0023 did for the others:
--
--   request_items (request_id, enterprise_id)       -> verification_requests (id, enterprise_id)
--   request_items (instrument_id, enterprise_id)    -> instruments (id, enterprise_id)
--   certificates (instrument_id, enterprise_id)     -> instruments (id, enterprise_id)
--   certificates (request_id, instrument_id)        -> request_items (request_id, instrument_id)
--   certificates (supersedes, instrument_id)        -> certificates (id, instrument_id)
--   instrument_events (related_instrument_id, related_enterprise_id) -> instruments (id, enterprise_id)
--   instrument_events (instrument_id, related_enterprise_id)         -> instruments (id, enterprise_id)
--
-- A key binds every role (the worker and the tables' owner too), sees through row-level security
-- and runs only when its columns are written; enterprises never change under the rows (0017).
-- Each composite key replaces the plain ones on its columns, which it implies: an item is checked
-- by two keys as before, a certificate by three instead of four (its lab's stays), an event that
-- names a related instrument by two instead of one (MATCH SIMPLE leaves every other event, whose
-- columns are NULL, as it was: no check more).
--
-- What writes the columns, and why the rows already there satisfy the keys:
--
-- * Request items are inserted only by insert_request (service/requests/queries.py), with the
--   ids CreateVerificationRequest checked to be the request's enterprise's instruments
--   (service/requests/routes.py _check_instruments, 422 otherwise); nothing changes an item's
--   request or instrument (0017). An item gets the enterprise as a column of its own (NOT NULL,
--   filled below from its request, and written by insert_request from now on): row-level
--   security and a key alone cannot tie two other rows to each other.
-- * A certificate is inserted only by record_result (service/certificates/routes.py): its
--   enterprise is its locked instrument's; its request is the one claim_item found holding an
--   item for that very instrument (`WHERE ri.instrument_id = $1`), or none; the document it
--   supersedes was checked by _corrected to be one of that instrument (422 otherwise).
--   Certificates are immutable but for a one-time revocation (0005), so only inserts are checked.
-- * An event names a related instrument only in a replacement: the successor's `registered`
--   names the instrument it replaces (service/instruments/registration.py) and the old one's
--   `replaced` its successor (service/lifecycle/routes.py), both of the enterprise whose
--   instrument is replaced (instruments.replaces and replaced_by are held to it by 0020); the
--   generated register (service/demo_register) writes the same pairs; imports and the backfill of
--   0005 name none. Events have no enterprise column, and giving every one of them one would mean
--   rewriting the register's largest table: instead an event that names a related instrument
--   carries related_enterprise_id, its own instrument's enterprise (filled below, written by
--   record_event from now on), and both instruments must be of it; the CHECK keeps one of the two
--   columns from being written without the other (MATCH SIMPLE would leave such a row unchecked).
--
-- A database that somehow holds a row that breaks one stops at that key, which PostgreSQL names
-- with the row's key values, and nothing of this migration is applied.
--
-- Locks. Adding a column takes ACCESS EXCLUSIVE on request_items and instrument_events, held to
-- COMMIT: their reads (a request's items, a lab's visibility of instruments and certificates, an
-- instrument's history) wait for the whole migration, which no order of statements avoids. On the
-- other tables the new keys come first, in 0021's order: adding each takes SHARE ROW EXCLUSIVE on
-- the tables it joins while it checks the rows, under which reads go on and only writes wait; the
-- unique index of verification_requests is built by CREATE UNIQUE INDEX (SHARE: reads go on)
-- rather than ADD CONSTRAINT UNIQUE, which would take ACCESS EXCLUSIVE (a key may reference a
-- unique index). Dropping the old keys takes ACCESS EXCLUSIVE on certificates and on the tables
-- they referenced (instruments, enterprises, verification_requests), and so comes last, held only
-- until the COMMIT that follows.
--
-- Measured on a register of 200,000 instruments (2,000 enterprises, 12,000 of the instruments
-- replaced) with 600,000 requests of one item each, 610,000 certificates (three results each, each
-- answering its request, and 10,000 corrections) and 2,200,000 events (24,000 naming a related
-- instrument), on two cores shared with other work (load average about 3.5): 10 to 12 s in all, of
-- which 5 to 5.6 s rewrite request_items, 0.8 to 1.8 s fill the events' column (one scan of them),
-- 0.25 to 0.35 s check it, 0.4 to 0.6 s build the index of verification_requests, and 3.3 to 4.3 s
-- check the seven keys (1.2 to 2 s for the items', 0.6 to 0.9 s the events', 1.25 to 1.75 s the
-- certificates'), each growing with its table.
--
-- As 0021 and 0023 say, a request that read one of these tables and then writes it while this runs
-- can deadlock with it; PostgreSQL rolls one of them back (a 409 to retry, or this migration
-- failing with nothing applied, to be run again). Migrating with the API and the worker stopped,
-- as the README's deploy order says, meets none.

ALTER TABLE request_items ADD COLUMN enterprise_id uuid;
ALTER TABLE instrument_events ADD COLUMN related_enterprise_id uuid;

-- Each item's enterprise is its request's, written by rewriting the table (ALTER COLUMN ... TYPE
-- with the type unchanged and USING its request's enterprise) rather than by an UPDATE. The
-- rewrite writes each item once, in order, and rebuilds the two indexes by sorting; an UPDATE
-- inserted every new row version into both indexes at random places and left as many dead ones
-- (on the register measured above, 9 to 12 s even with the audit trigger off, against 5 to 6 s).
-- And it fires no trigger, where an UPDATE would have given the audit trail (0008) a row per item,
-- hash-chained one by one at COMMIT, for what is no change to the register. A transform may not
-- hold a subquery, hence the function, which is dropped as soon as it has served.
CREATE FUNCTION request_enterprise(request uuid) RETURNS uuid LANGUAGE sql STABLE
    AS $$ SELECT enterprise_id FROM verification_requests WHERE id = request $$;
ALTER TABLE request_items
    ALTER COLUMN enterprise_id TYPE uuid USING request_enterprise(request_id),
    ALTER COLUMN enterprise_id SET NOT NULL;
DROP FUNCTION request_enterprise(uuid);

-- Two events per replacement name a related instrument: an UPDATE of those alone (no audit
-- trigger on events), found by one scan of the table.
UPDATE instrument_events ev SET related_enterprise_id = i.enterprise_id
FROM instruments i
WHERE i.id = ev.instrument_id AND ev.related_instrument_id IS NOT NULL;
ALTER TABLE instrument_events ADD CONSTRAINT instrument_events_related_enterprise
    CHECK ((related_instrument_id IS NULL) = (related_enterprise_id IS NULL));

CREATE UNIQUE INDEX verification_requests_id_enterprise ON verification_requests (id, enterprise_id);

ALTER TABLE request_items
    ADD CONSTRAINT request_items_request_fkey FOREIGN KEY (request_id, enterprise_id)
        REFERENCES verification_requests (id, enterprise_id),
    ADD CONSTRAINT request_items_instrument_fkey FOREIGN KEY (instrument_id, enterprise_id)
        REFERENCES instruments (id, enterprise_id);
ALTER TABLE instrument_events
    ADD CONSTRAINT instrument_events_related_fkey FOREIGN KEY (related_instrument_id, related_enterprise_id)
        REFERENCES instruments (id, enterprise_id),
    ADD CONSTRAINT instrument_events_related_owner_fkey FOREIGN KEY (instrument_id, related_enterprise_id)
        REFERENCES instruments (id, enterprise_id);
ALTER TABLE certificates
    ADD CONSTRAINT certificates_instrument_fkey FOREIGN KEY (instrument_id, enterprise_id)
        REFERENCES instruments (id, enterprise_id),
    ADD CONSTRAINT certificates_request_fkey FOREIGN KEY (request_id, instrument_id)
        REFERENCES request_items (request_id, instrument_id),
    ADD CONSTRAINT certificates_superseded_fkey FOREIGN KEY (supersedes, instrument_id)
        REFERENCES certificates (id, instrument_id);

ALTER TABLE request_items
    DROP CONSTRAINT request_items_request_id_fkey,
    DROP CONSTRAINT request_items_instrument_id_fkey;
ALTER TABLE instrument_events DROP CONSTRAINT instrument_events_related_instrument_id_fkey;
ALTER TABLE certificates
    DROP CONSTRAINT certificates_instrument_id_fkey,
    DROP CONSTRAINT certificates_enterprise_id_fkey,
    DROP CONSTRAINT certificates_request_id_fkey,
    DROP CONSTRAINT certificates_supersedes_fkey;
