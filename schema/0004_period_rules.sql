-- Only the two Chinese period rules: both stay within the legal cycle. An end-of-year rule would let
-- an enterprise lengthen compulsory validity by up to eleven months. (An enterprise still on it makes
-- this migration fail: its dates need a human decision, not a silent rewrite.)
ALTER TABLE enterprises DROP CONSTRAINT enterprises_period_rule_check;
ALTER TABLE enterprises ADD CONSTRAINT enterprises_period_rule_check
    CHECK (period_rule IN ('inclusive_minus_one', 'civil_code'));
