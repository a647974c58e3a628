-- Search under row-level security. ILIKE is not leakproof, so PostgreSQL will not evaluate it in an
-- index scan ahead of a policy: the trigram index went unused and a search read every instrument
-- of the enterprise. The search runs here as the owner, with the policy's own test applied first,
-- and the list joins the ids it finds.
CREATE FUNCTION instrument_search(enterprise uuid, pattern text) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp ROWS 100 AS $$
    SELECT i.id FROM instruments i
    WHERE principal_sees(enterprise)
      AND i.enterprise_id = enterprise
      AND (i.name || ' ' || i.serial_no || ' ' || coalesce(i.management_no, '')) ILIKE pattern
$$;

-- The API and the worker take their role at connection start (service/db.py), which their login
-- may do only as a member of it. A superuser needs no membership; a migrating owner that is not
-- one is given it here, and may pass it on to the logins it deploys with.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT metreg_api, metreg_worker TO %I WITH ADMIN OPTION', current_user);
    END IF;
END $$;
