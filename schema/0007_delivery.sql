-- Delivery bookkeeping: e-mails held for the daily digest, and the start of the current series of
-- tries (a manual retry starts a new series with a fresh budget).

ALTER TABLE deliveries
    ADD COLUMN digest boolean NOT NULL DEFAULT false,
    ADD COLUMN series_start integer NOT NULL DEFAULT 0,
    ADD CHECK (NOT digest OR channel = 'email'),
    ADD CHECK (series_start BETWEEN 0 AND attempts);

CREATE INDEX deliveries_notice ON deliveries (notice_id);
-- The digest sender's queue: held e-mails whose hour has come.
CREATE INDEX deliveries_digest ON deliveries (next_attempt_at) WHERE digest AND status = 'pending';
