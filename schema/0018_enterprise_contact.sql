-- An enterprise's address and contact (domain.md §4.2): the filing table of compulsory instruments
-- prints them in its title block (单位地址, 联系人 / 联系电话). Optional: an enterprise created
-- before this, or without them, has NULL and its filing leaves those lines blank to fill in by hand.
--
-- The API checks the same bounds first (service/enterprises/schemas.py, PHONE_PATTERN for the
-- phone), so a bad value is a 400 naming its field; these checks hold for every other writer.
-- The phone allows what Chinese and international numbers are written with: an optional leading
-- +, digits, spaces, hyphens and parentheses (at least one digit), then optionally an extension
-- (转123, 分机 123, ext. 123, x123, #123).
--
-- Nothing else changes: the audit trigger (0008_trust.sql, audit_record) records to_jsonb of the
-- whole row, so changes to these columns are audited like every other; row-level security and
-- the table's grants are per row and per table, so whoever may read or write an enterprise may
-- read or write these too.
ALTER TABLE enterprises
    ADD COLUMN address text CHECK (length(address) BETWEEN 1 AND 300),
    ADD COLUMN contact_name text CHECK (length(contact_name) BETWEEN 1 AND 100),
    ADD COLUMN contact_phone text CHECK (
        length(contact_phone) BETWEEN 1 AND 40
        AND contact_phone ~ '^ *\+?[0-9 ()-]*[0-9][0-9 ()-]*( *(转|分机|[Ee][Xx][Tt]\.?|[Xx]|#) *[0-9]{1,8})? *$'
    );
