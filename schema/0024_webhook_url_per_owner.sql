-- An owner has at most one active webhook per URL. A second one at the same URL is the same
-- receiver getting every notice twice once deliveries are one per webhook (0025), signed with two
-- secrets; POST /v1/webhooks answers it with a 409 naming `url` (service/webhooks/queries.py
-- insert_webhook). The check is this index, not a read before the insert: two creations at once
-- would both read nothing and both insert, while here the second waits for the first and conflicts.
--
-- The owner is (enterprise_id, region_code), exactly one of them set (0006): NULLS NOT DISTINCT
-- makes two rows of one enterprise (region_code NULL) or of one region (enterprise_id NULL)
-- collide. Different owners may share a URL (regulators of 31 and 3101 at one platform; two
-- enterprises at one integrator), and a deleted webhook (active = false) frees its URL. The URL is
-- indexed through md5: a URL may hold 2,000 characters of any script, up to 8,000 bytes in UTF-8,
-- more than a B-tree entry holds (2,704 bytes); the hash is fixed in size, and two different URLs
-- sharing one would only refuse the second (a 409), never merge deliveries.
--
-- A database may already hold duplicates (the API accepted them until now). The migration refuses
-- them, listing each owner, URL and webhook, rather than deactivating all but one: which of them
-- to keep is the owner's choice, not the deployer's. They may subscribe to different events
-- (keeping one could silently stop a kind of notice) and carry different secrets (the receiver
-- checks the one it was given; until 0025 each notice was signed with either, whichever won), and a
-- deactivation here would be a change to a tenant's delivery with no actor to audit. Deleting the
-- extra ones is an ordinary, audited `DELETE /v1/webhooks/{id}` by the owner or an admin, possible
-- with the previous release (the migrations before this one apply on their own, and the previous
-- release works on them), or an UPDATE by the operator (audited as `sql`); then `metreg migrate`
-- again. This comes before 0025 (one delivery per webhook) so that meanwhile deliveries are still
-- one per notice and URL (0006's deliveries_target): a receiver behind duplicates gets each notice
-- once, as before, not once per duplicate.
--
-- The lock is the one the index build takes, taken first: no webhook is written between the check
-- and the build, which would otherwise fail on a duplicate created meanwhile with a bare message.
LOCK TABLE webhooks IN SHARE MODE;
DO $$
DECLARE
    groups integer;
    listed text;
BEGIN
    SELECT count(*), string_agg(line, E'\n' ORDER BY n) FILTER (WHERE n <= 20)
    INTO groups, listed
    FROM (SELECT format('  %s at %s: webhooks %s (oldest first)',
                        coalesce('enterprise ' || enterprise_id, 'region ' || region_code), url,
                        string_agg(id::text, ', ' ORDER BY created_at, id)) AS line,
                 row_number() OVER (ORDER BY enterprise_id, region_code, url) AS n
          FROM webhooks WHERE active
          GROUP BY enterprise_id, region_code, url
          HAVING count(*) > 1) AS duplicates;
    IF groups > 0 THEN
        RAISE EXCEPTION '%', format('an owner may have one active webhook per URL from now on; owners and URLs '
                                    'with more: %s. Which to keep is the owner''s choice (its secret, its events): '
                                    'delete the others, then run metreg migrate again. The previous release runs '
                                    'on this schema: DELETE /v1/webhooks/{id} as the owner or an admin; or in SQL, '
                                    'audited as such: UPDATE webhooks SET active = false, deleted_at = now() '
                                    'WHERE id = ...', groups)
                             || E'\n' || listed || CASE WHEN groups > 20 THEN format(E'\n  and %s more', groups - 20) ELSE '' END
            USING ERRCODE = 'unique_violation';
    END IF;
END $$;

-- Built inside the migration's transaction: webhooks are a few per owner, and the SHARE lock holds
-- back only their creation and deletion for that moment (reads, and so deliveries, go on).
CREATE UNIQUE INDEX webhooks_owner_url ON webhooks (enterprise_id, region_code, md5(url)) NULLS NOT DISTINCT
    WHERE active;
