-- A request item's certificate and a history event's certificate are their own instrument's, as
-- 0021 made a notice's. The API may insert and update both (an enterprise the items of its
-- requests and the events of its instruments, a lab those of its requests and of the instrument in
-- them, a regulator those of its region, an admin any), and row-level security checks the row
-- written, not the certificate it names: the plain keys took any certificate of any tenant. An
-- item naming one is done (its request completes without the instrument's result, and no lab can
-- record one through it any more) and shows that document's number and outcome as the
-- instrument's result; an event naming one puts it in the instrument's history, its evidence
-- trail, as the result recorded or the certificate revoked.
--
-- Each pair (certificate, instrument) references the certificate's (id, instrument_id), through
-- certificates_id_instrument of 0020; each row's instrument_id is the instrument it is about (the
-- item's instrument of the request, the event's instrument), which 0017 keeps from changing.
-- MATCH SIMPLE (the default) leaves a row without a certificate unchecked: an item waiting for its
-- result, and every event but a result's or a revocation's, cost nothing more; the others cost
-- one probe of certificates_id_instrument instead of one of the primary key.
--
-- The rows already there satisfy them. The one statement that writes an item's certificate_id is
-- attach_result (service/requests/queries.py), which sets the certificate just recorded for the
-- instrument on that instrument's item (`WHERE instrument_id = $2`, the same instrument), in the
-- transaction that records it (service/certificates/routes.py record_result); items are inserted
-- without one. Events name a certificate only through record_event from
-- service/certificates/routes.py: a result's event names the certificate just recorded for its
-- instrument; a revocation's names the certificate revoked, which is the instrument's current
-- certificate (its own since 0020) when a failure voids it, and when revoked by itself a
-- certificate whose own instrument_id is the instrument locked and written; the set-based inserts
-- (imports, the demo register, 0005's backfill) name none. Nothing updates either column after,
-- and no side's instrument ever changes (certificates are immutable, 0005; items and events keep
-- their instrument, 0017). A database that somehow holds a row naming another instrument's
-- certificate stops here, naming the constraint, with nothing applied.
--
-- The new keys come first, in 0021's order: adding each takes SHARE ROW EXCLUSIVE on its table and
-- on certificates while it checks the rows there, under which reads go on and only writes of the
-- three tables wait. The check is one scan of the table joined to certificates_id_instrument: on a
-- register of 200,000 instruments with 600,000 certificates (three results each, a request item
-- and a history event for each) and seven other events per instrument, about 0.55 s for the
-- 600,000 request items and 0.7 s for the 2,200,000 events, growing with their number.
-- Dropping the old keys takes ACCESS EXCLUSIVE on the three tables, and so comes last, held only
-- until the COMMIT that follows: first, it would stop for both scans every read of a certificate,
-- and with them every read of an instrument, which joins its current certificate.
--
-- The price, as 0021's: a transaction that read one of the tables during the scans and then
-- writes it waits for this one, which waits for it; and one that wrote certificates before this
-- took them (a result being recorded) and then writes its item or event waits for this one, which
-- holds that table and waits for certificates. PostgreSQL ends such a deadlock after
-- deadlock_timeout by rolling one of them back: the API's request answers 409 (to be retried), or
-- this migration fails with nothing applied, to be run again. Migrating with the API and the
-- worker stopped, as the README's deploy order says, meets neither.
ALTER TABLE request_items ADD CONSTRAINT request_items_certificate_fkey FOREIGN KEY (certificate_id, instrument_id)
    REFERENCES certificates (id, instrument_id);
ALTER TABLE instrument_events ADD CONSTRAINT instrument_events_certificate_fkey
    FOREIGN KEY (certificate_id, instrument_id) REFERENCES certificates (id, instrument_id);
ALTER TABLE request_items DROP CONSTRAINT request_items_certificate_id_fkey;
ALTER TABLE instrument_events DROP CONSTRAINT instrument_events_certificate_id_fkey;
