-- A try lost with its job while its notice is cancelled ends failed instead of pending for ever.
--
-- A cancellation leaves a try claimed and not yet recorded to the job that claimed it (0014). When
-- that job dies (a killed worker) the try is never recorded, and the usual recovery does not
-- reach it: the dispatcher hands over only pending and dispatched notices, so the claim, once its
-- lease has run out, would be made again for a live notice but never for a cancelled one. The
-- worker's dispatch tick now also fails such tries (jobs/dispatch.py end_lost_tries), as the
-- digest does for held e-mails; this index finds them without reading every delivery.
--
-- Sent one by one (the digest's are in deliveries_digest) and tried at least once: a lost claim
-- has attempts > 0, while a delivery never claimed has none (the cancellation fails those). What
-- else it holds is live notices' claims on the wire and retries waiting, few at any time; the
-- sweep reads only those whose time has come (next_attempt_at <= now), which the dispatcher takes
-- within seconds. On 1,000,000 deliveries the index was 256 kB and the sweep took about 1 ms.
-- Built inside the migration's transaction, as 0019's was: writes of deliveries wait for it (a
-- quarter of a second over 1,000,000 here), reads do not.
CREATE INDEX deliveries_claimed ON deliveries (next_attempt_at) WHERE status = 'pending' AND NOT digest AND attempts > 0;

-- The cancellation also says so when it finds a try whose claim ran out unrecorded (its job died
-- and the notice was cancelled before its next dispatch): that try went unrecorded and may have
-- arrived, which "not tried again" alone would hide. The same words as the sweep's
-- (service/notices/queries.py drop_deliveries). Otherwise as 0014.
CREATE OR REPLACE FUNCTION notice_cancelled() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE deliveries d
    SET status = 'failed', updated_at = NEW.updated_at,
        last_error = CASE
            WHEN d.attempts = 0 THEN 'not sent: the notice was cancelled'
            WHEN NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.attempt = d.attempts)
                THEN 'try ' || d.attempts || ' went unrecorded (its job ended first; it may have arrived); '
                     'not tried again: the notice was cancelled'
            ELSE 'not tried again: the notice was cancelled' END
    WHERE d.notice_id = NEW.id AND d.status = 'pending'
      AND NOT (d.attempts > 0 AND d.next_attempt_at > NEW.updated_at
               AND NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.attempt = d.attempts));
    RETURN NULL;
END $$;
