-- The planner's schedule (issue 7): for each instrument, the enterprise-local day on which the
-- planner next has something to do for it, so that a day's run reads the instruments whose day has
-- come instead of every instrument in a reminder window or overdue (design.md §6).
--
-- '-infinity' means "look at it on the next run": every instrument starts so, and a change of what
-- planning depends on (valid_until, lifecycle, regime) puts it back there, whoever makes it (the
-- API, an import, a hand-written UPDATE). The planner then stores the day
-- service.notices.rules.next_notice_on gives, or 'infinity' while nothing can come before the
-- instrument changes again. A change of an enterprise's reminder settings is found by the planner
-- itself, against notice_pacing: the settings its schedule was last computed with.
--
-- A table of its own rather than a column of instruments: the planner writing instruments would
-- add a row to the audit trail and bump the version behind ETags for every instrument planned.
CREATE TABLE notice_schedule (
    instrument_id uuid PRIMARY KEY REFERENCES instruments (id) ON DELETE CASCADE,
    next_on       date NOT NULL DEFAULT '-infinity'
);
-- Instruments out of service or without a valid_until ('infinity') are never looked for.
CREATE INDEX notice_schedule_next ON notice_schedule (next_on) WHERE next_on < 'infinity';
-- Each run moves the day of every row it reads, leaving a dead index entry at or before today,
-- inside the range the next run scans: vacuumed and analysed after 1% of the rows changed (about a
-- day's runs), not the default 20% (a week or more of entries walked again every run).
ALTER TABLE notice_schedule SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01);

CREATE TABLE notice_pacing (
    enterprise_id          uuid PRIMARY KEY REFERENCES enterprises (id),
    reminder_days          integer[] NOT NULL,
    rotation_reminder_days integer[] NOT NULL,
    overdue_repeat_days    integer NOT NULL,
    escalate_after_days    integer NOT NULL
);

-- Backfill: every instrument is looked at once by the next run, as the planner used to every day
-- (it also cancels what was left stale); its schedule and its enterprise's pacing follow from there.
-- That one run reads the whole register (a minute or so for a million instruments).
INSERT INTO notice_schedule (instrument_id) SELECT id FROM instruments;

-- Rows written with triggers off (session_replication_role = replica) get no schedule row and are
-- never planned until they get one.
-- The API and imports write instruments; the schedule is kept by these triggers as their owner
-- (SECURITY DEFINER), so metreg_api needs no grant on it. Inserts are handled per statement: an
-- import or a generated register adds thousands of rows in one.
CREATE FUNCTION notice_schedule_add() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    INSERT INTO notice_schedule (instrument_id) SELECT id FROM added;
    RETURN NULL;
END $$;
CREATE TRIGGER notice_schedule_add AFTER INSERT ON instruments
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION notice_schedule_add();

CREATE FUNCTION notice_schedule_recheck() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    UPDATE notice_schedule SET next_on = '-infinity' WHERE instrument_id = NEW.id AND next_on <> '-infinity';
    RETURN NULL;
END $$;
CREATE TRIGGER notice_schedule_recheck AFTER UPDATE OF valid_until, lifecycle, regime ON instruments
    FOR EACH ROW
    WHEN (OLD.valid_until IS DISTINCT FROM NEW.valid_until OR OLD.lifecycle IS DISTINCT FROM NEW.lifecycle
          OR OLD.regime IS DISTINCT FROM NEW.regime)
    EXECUTE FUNCTION notice_schedule_recheck();

-- The worker plans for every tenant; the API has no business here and sees no row.
-- (The role's comment from 0008, "writes only notices and deliveries", is left alone: roles are
-- cluster-wide, and a COMMENT racing another database's migration can fail.)
GRANT INSERT, UPDATE ON notice_schedule, notice_pacing TO metreg_worker;
ALTER TABLE notice_schedule ENABLE ROW LEVEL SECURITY;
ALTER TABLE notice_pacing ENABLE ROW LEVEL SECURITY;
CREATE POLICY worker ON notice_schedule TO metreg_worker USING (true);
CREATE POLICY worker ON notice_pacing TO metreg_worker USING (true);
