-- Every filter of the audit trail and of the API keys list reads the rows its page returns, and a
-- lab's page of an instrument's documents costs its page (service/audit/queries.py select_entries,
-- service/keys/queries.py select_keys, service/certificates/queries.py select_instrument_certificates;
-- bench/explain_lists.py shows each, tests/integration/test_list_plans.py holds each to it).
--
-- A filter without an index in page order of its own walked the index of its scope, keeping the
-- rows that matched, until a page was full: on the bench's 2,000,000 audit rows a key that wrote
-- 120 of them read 833,000 rows (~200 ms) for a page, as did an action, an entity or an entity id
-- of as few rows; a time span a year and a half back read every row written since (1,500,000,
-- 300-400 ms), and a quarter hour holding less than a page the whole trail (0.5 s); an
-- enterprise's or a lab's API keys, 6,300-8,500 of 20,000 keys.
--
-- Each (filter, seq) index below is ascending, read backwards for newest first: a new row has the
-- highest seq of its value, so it lands at the end of that value's run, where PostgreSQL splits a
-- full page leaving the old one full ("split after new item"); descending, it lands at the start
-- and every split leaves two half-full pages (a value holding most rows, 400,000 appended: 34 MB
-- descending, 19 MB ascending). Built on the bench's 2,000,000 rows, 60-95 MB each, where the
-- trail there is 414 MB of rows without their before and after (an instrument's row is ~1 KB of
-- JSON twice). Each costs every audited row an index entry, appended under the trail's lock at
-- commit: with the clock's trigger below, ~10 µs a row (50,000 rows inserted: 0.5-0.6 s before,
-- 1.0-1.3 s after, ~5 µs a row the trigger's), where audit_record itself takes ~0.4 ms a row.
--
-- Plain CREATE INDEX in the migration's transaction, as 0019: the deploy order stops the API and
-- the worker first (README), and the builds, the clock's count and the drop took 15 s on the bench.

-- GET /v1/audit?actor_key_id=: the rows one key wrote. The command line and migrations write
-- with no key, which no filter asks for.
CREATE INDEX audit_log_actor ON audit_log (actor_key_id, seq) WHERE actor_key_id IS NOT NULL;
-- ?action=: the rows of one operation (SealInstrument, RevokeApiKey...).
CREATE INDEX audit_log_action ON audit_log (action, seq);
-- ?entity_id= (with ?entity= or without): one row's history. An id names one row of one table
-- (a uuid; request/instrument for a request item), so the entity is a filter on the few rows of
-- that id. 0008's (entity, entity_id, seq) served the pair only: ?entity_id= alone walked the
-- whole trail, and ?entity= alone too, since within an entity it is in entity_id order.
DROP INDEX audit_log_entity;
CREATE INDEX audit_log_entity_id ON audit_log (entity_id, seq);
-- ?entity=: the rows of one table (labs, webhooks: slivers of the trail beside instruments).
CREATE INDEX audit_log_entity ON audit_log (entity, seq);
-- A regulator's page where its region holds too little of the trail to walk everyone's rows for
-- (service/pagination.py walks_for_region): the rows whose region code starts with the
-- regulator's, gathered and sorted. The region code as written, which is what the policy (0008,
-- 0011) goes by: an enterprise that moves keeps its old rows under its old region, so the
-- region's enterprises' rows (audit_log_enterprise) would not be them all. In "C" order, so that
-- a prefix is a range of it (the query says so: region_code COLLATE "C" >= '31' AND < '32').
-- Without seq: the rows are sorted anyway, and a key of a few values is then stored once per run
-- of rows (deduplication): 13 MB.
CREATE INDEX audit_log_region ON audit_log (region_code COLLATE "C") WHERE region_code IS NOT NULL;

-- ?since= and ?until= on `at`. The trail is in seq order, the order its rows were appended at
-- commit, while `at` is the instant of the request that wrote them (metreg.now) or its
-- transaction's start. So `at` is not in seq order: a transaction that began before another and
-- committed after it appends rows of an earlier `at` after the other's (an import of many rows
-- takes seconds; a command-line run, minutes), and a clock set by hand goes anywhere. A span was
-- therefore a filter: the page walked every row newer than `until` before the span's first, and
-- on past `since` to the first row of the trail when the span held less than a page.
--
-- It is a range of seq to within the trail's lag: how far any row's `at` falls behind the latest
-- `at` of the rows before it. With lag L, for any rows r before s (seq), at(s) >= at(r) - L. So a
-- row whose `at` is before since - L has only rows earlier than since before it, and a row at or
-- after until + L only rows at or after until after it. audit_seq_from and audit_seq_until find
-- such rows by bisecting seq (log2 of the rows in probes of the primary key: 21 for 2,000,000,
-- ~0.2 ms), and the page reads between them: its rows, and any within 2 L of the span's ends. On
-- a register whose clock only moves forward, L is its longest write transaction; a clock once set
-- far back makes L large and the bounds loose, never wrong.
--
-- audit_clock keeps a bound of the latest `at` and L, moved on by each appended row, in the
-- appending transaction under the trail's lock, so a reader's snapshot has the clock of the rows
-- it sees. It is one row, and it writes only when a row moves it: were `high` the latest `at`
-- itself, that would be every audited commit, and under an old snapshot (`metreg audit verify`, a
-- long export, pg_dump) its dead versions would pile up, each append walking them while it holds
-- the trail's lock. So `high` is the latest `at` rounded up to the next minute (UTC), and the lag
-- is counted from it: the row changes when the first row of a new minute comes, at most once a
-- minute, and when the lag grows, which it only ever does (in-order rows of one minute fall
-- behind `high` less and less; the lag reaches a minute within the first minutes and then moves
-- only for a row later than any before it by more than that).
--
-- The bounds stay safe, and loose by at most a minute each side. Let H(s) be `high` just after
-- row s: the latest `at` of the rows up to s, rounded up, so max at(r <= s) < H(s) <= max at(r <=
-- s) + 1 minute. The lag kept is the largest H(s) - at(s). For rows r before s, at(r) < H(s), so
-- at(r) - at(s) < H(s) - at(s) <= lag: the lag kept is at least the true L, and the bounds built on
-- it hold every row of the span. And H(s) - at(s) <= max(at(r <= s)) - at(s) + 1 minute <= L + 1
-- minute (that maximum is at(s) itself or an earlier row's): at most a minute more than the true
-- L, so a page reads at most the rows of a minute more beyond each end of its span.
--
-- The lag never shrinks: one write transaction that took an hour (a large import, a command-line
-- run) makes every span read afterwards take the rows within an hour of its ends, for good (the
-- rows are still right; a page reads more of them). audit_clock_recount() counts it afresh from the
-- rows there are, which gives the same lag (it is the trail's, not the clock's).
--
-- A trigger of its own on audit_log, not a line in audit_record: a writer already inside the old
-- audit_record when this commits (the command line) would append without it; a trigger on
-- audit_log is taken when the INSERT runs, which waits for this (SHARE, below).
CREATE TABLE audit_clock (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    high     timestamptz,
    lag      interval NOT NULL DEFAULT '0' CHECK (lag >= '0')
);
-- Read through the functions below only.
REVOKE ALL ON audit_clock FROM metreg_api, metreg_worker;

-- Runs as whoever inserts into audit_log: audit_record's owner (SECURITY DEFINER), no one else.
-- `high` is a whole minute (UTC) after every `at` appended: an `at` before it rounds up to at most
-- it, so that row moves the clock only where it falls further behind `high` than the lag.
CREATE FUNCTION audit_clock_advance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    high_after constant timestamptz := date_trunc('minute', NEW.at, 'UTC') + interval '1 minute';
BEGIN
    UPDATE public.audit_clock
    SET high = greatest(high, high_after), lag = greatest(lag, greatest(high, high_after) - NEW.at)
    WHERE high IS NULL OR NEW.at >= high OR high - NEW.at > lag;
    RETURN NULL;
END $$;

-- The clock of the rows there are: for this migration, and for a trail loaded without triggers.
CREATE FUNCTION audit_clock_recount() RETURNS audit_clock
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH ordered AS (
        SELECT at, max(date_trunc('minute', at, 'UTC')) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING)
                   + interval '1 minute' AS high
        FROM audit_log
    )
    UPDATE audit_clock
    SET high = (SELECT max(high) FROM ordered),
        lag = coalesce((SELECT max(high - at) FROM ordered), '0')
    RETURNING *
$$;
REVOKE EXECUTE ON FUNCTION audit_clock_recount() FROM PUBLIC;

-- The first seq a row at or after `since` may have: every row before it is earlier. Both bounds
-- read in the caller's snapshot (STABLE) and past row-level security: a bound of the whole trail
-- is a bound of any principal's part of it.
CREATE FUNCTION audit_seq_from(since timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    lag constant interval := coalesce((SELECT c.lag FROM audit_clock c), '0');
    -- NULL where since - lag would fall before the first instant PostgreSQL holds: no bound.
    before constant timestamptz :=
        CASE WHEN since - timestamptz '4713-01-01 00:00:00+00 BC' > lag THEN since - lag END;
    lo bigint := 0;  -- every row up to lo is earlier than since
    hi bigint := coalesce((SELECT max(seq) FROM audit_log), 0) + 1;
    mid bigint;
    probe record;
BEGIN
    WHILE hi - lo > 1 LOOP
        mid := (lo + hi) / 2;
        SELECT seq, at INTO probe FROM audit_log WHERE seq >= mid AND seq < hi ORDER BY seq LIMIT 1;
        IF FOUND AND probe.at < before THEN
            lo := probe.seq;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    RETURN lo + 1;
END $$;

-- A seq past every row before `until`: every row from it on is at or after until.
CREATE FUNCTION audit_seq_until(until timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    lag constant interval := coalesce((SELECT c.lag FROM audit_clock c), '0');
    -- NULL where until + lag would fall past the last instant PostgreSQL holds: no bound.
    after constant timestamptz :=
        CASE WHEN timestamptz '294000-01-01 00:00:00+00' - until > lag THEN until + lag END;
    lo bigint := 0;
    hi bigint := coalesce((SELECT max(seq) FROM audit_log), 0) + 1;  -- every row from hi on is at or after until
    mid bigint;
    probe record;
BEGIN
    WHILE hi - lo > 1 LOOP
        mid := (lo + hi) / 2;
        SELECT seq, at INTO probe FROM audit_log WHERE seq >= mid AND seq < hi ORDER BY seq LIMIT 1;
        IF NOT FOUND THEN
            hi := mid;
        ELSIF probe.at >= after THEN
            hi := probe.seq;
        ELSE
            lo := probe.seq;
        END IF;
    END LOOP;
    RETURN hi;
END $$;

-- The clock of the rows already there, counted with appends held off (the index builds above
-- took the same lock): SHARE makes audit_record's INSERT wait until this commits, and then fire
-- the new trigger. Reads go on.
LOCK TABLE audit_log IN SHARE MODE;
INSERT INTO audit_clock DEFAULT VALUES;
SELECT audit_clock_recount();
CREATE TRIGGER audit_clock AFTER INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_clock_advance();

-- API keys (GET /v1/api-keys), newest first: ?enterprise_id=, ?lab_id= (a tenant's keys) and
-- ?role= (regulators' among enterprises') each in page order. ?active=true stays a filter on the
-- walk of every key: the keys that work at an instant end as the clock moves on, so no index
-- holds them in page order, and gathering those that end later (by an index on expires_at)
-- reads all of them for each page, more than the walk reads where keys are given an end as a rule.
CREATE INDEX api_keys_enterprise ON api_keys (enterprise_id, created_at, id) WHERE enterprise_id IS NOT NULL;
CREATE INDEX api_keys_lab ON api_keys (lab_id, created_at, id) WHERE lab_id IS NOT NULL;
CREATE INDEX api_keys_role ON api_keys (role, created_at, id);

-- Whether a lab sees an enterprise (0008 lab_sees_enterprise: a request of the enterprise's it
-- holds, or a document it issued to it), which row-level security asks for each enterprise row a
-- lab reads: once a row of a lab's page of requests, and of its page of an instrument's documents
-- (which now reads the instrument and its enterprise once: service/certificates/queries.py). Each
-- answer walked the enterprise's requests (verification_requests_enterprise), then the lab's
-- documents (certificates_lab_number), for the other: ~115 buffers on the bench. Now one probe
-- each. The pairs repeat (a lab works for an enterprise many times), so their entries are stored
-- once per pair (deduplication): 0.4 and 2.5 MB on the bench.
CREATE INDEX verification_requests_enterprise_lab ON verification_requests (enterprise_id, lab_id);
CREATE INDEX certificates_enterprise_lab ON certificates (enterprise_id, lab_id) WHERE lab_id IS NOT NULL;
