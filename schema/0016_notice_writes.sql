-- What a notice costs to write (design.md §9: a day's planning over 1,000,000 instruments in under
-- 2 s). A day's run writes some 20,000 notices, and most of each one's cost was its foreign-key
-- checks (one query per key per row) and the index entries it adds, each on a page of its own.

-- One check instead of two: a notice's enterprise is its instrument's, so the pair references the
-- instrument, whose own foreign key vouches for the enterprise (and a notice can no longer name an
-- enterprise other than its instrument's). Instruments never change enterprise; one that has
-- notices now cannot.
ALTER TABLE instruments ADD CONSTRAINT instruments_id_enterprise UNIQUE (id, enterprise_id);
ALTER TABLE notices
    ADD CONSTRAINT notices_instrument_fkey FOREIGN KEY (instrument_id, enterprise_id)
        REFERENCES instruments (id, enterprise_id),
    DROP CONSTRAINT notices_instrument_id_fkey,
    DROP CONSTRAINT notices_enterprise_id_fkey;

-- One index for a planned notice's series and for an instrument's notices: the series key, unique
-- among planned notices (no certificate) as before, over every notice with the certificate as a
-- fifth column (result notices differ in theirs, so none conflicts with another or with a planned
-- one), replaces notices_series and notices_instrument.
CREATE UNIQUE INDEX notices_series_all ON notices (instrument_id, kind, cycle, step, certificate_id) NULLS NOT DISTINCT;
DROP INDEX notices_series, notices_instrument;
ALTER INDEX notices_series_all RENAME TO notices_series;

-- Nothing looks notices up by their region_code: a regulator's are found through the region of
-- their enterprise as it is now (service/notices/queries.py notice_scope).
DROP INDEX notices_region;
