-- A cancelled notice sends nothing more, whoever cancels it. The cancellation used to fail the
-- notice's pending deliveries in its own statement, which row-level security reduced to nothing
-- when a lab cancelled (recording a result cancels the instrument's stale reminders, and a lab may
-- not see deliveries): they stayed pending for ever. A trigger, run as the tables' owner, reaches
-- them whatever the role.
--
-- A try claimed and not yet recorded is left alone while its lease runs: it may be on the wire,
-- and the job that claimed it records what it came to (delivered, or failed with no further try),
-- not that it was not sent. Such a claim holds the delivery past the cancellation (next_attempt_at
-- is its lease's end) and has no attempt row of its number yet; a retry waiting has one. The
-- cancellation's own instant is the row's updated_at, which every cancellation sets.
CREATE FUNCTION notice_cancelled() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE deliveries d
    SET status = 'failed', updated_at = NEW.updated_at,
        last_error = CASE WHEN d.attempts = 0 THEN 'not sent: the notice was cancelled'
                          ELSE 'not tried again: the notice was cancelled' END
    WHERE d.notice_id = NEW.id AND d.status = 'pending'
      AND NOT (d.attempts > 0 AND d.next_attempt_at > NEW.updated_at
               AND NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.attempt = d.attempts));
    RETURN NULL;
END $$;
CREATE TRIGGER notice_cancelled AFTER UPDATE OF status ON notices
    FOR EACH ROW WHEN (NEW.status = 'cancelled' AND OLD.status <> 'cancelled')
    EXECUTE FUNCTION notice_cancelled();
