-- The catalogue and use filters of the register list, in due order, as index ranges: without them
-- a filter that matches few rows of a large enterprise walks all of its rows (seen in bench/explain_filters).
CREATE INDEX instruments_catalog_due ON instruments (enterprise_id, catalog_code, due_key, id);
CREATE INDEX instruments_use_due ON instruments (enterprise_id, legal_use, due_key, id);
