-- A webhook delivery is one per notice and webhook, no longer one per notice and URL.
--
-- deliveries_target (0006) made a delivery unique on (notice_id, channel, target), and a webhook's
-- target is its URL. Two webhooks at one URL therefore got one delivery between them, whichever
-- the insert met first (service/deliveries/queries.py create_targets_of, ON CONFLICT DO NOTHING):
-- two regulators whose regions both cover an enterprise, each with a webhook at a shared
-- integration platform, got one escalation between them, and the other saw no delivery of it at
-- all (a delivery is visible to the owner of its webhook only); and it was signed with the secret
-- of whichever webhook won. Now each webhook gets its own delivery, signed with its own secret,
-- visible to its own owner, and failed on its own if that webhook is deleted. (The old key also
-- could not hold a long URL: the API takes 2,000 characters of any script, up to 8,000 bytes, and a
-- B-tree entry holds 2,704, so such a webhook's delivery failed to be written, and the delivery job
-- with it, for its whole batch. A webhook's key is now two uuids.)
--
-- It comes after 0024, which leaves an owner one active webhook per URL: applied to a database
-- still holding an owner's duplicates, this would have sent that receiver every notice once per
-- duplicate while 0024 refused to apply.
--
-- E-mail keeps its uniqueness on the address: an enterprise's notify_emails are its own, written
-- deduplicated (case-insensitively), and one mail per address and notice is the rule.
--
-- The rows already there satisfy the new keys: an e-mail row keeps the key it had (its channel
-- and target), and a webhook row's target is the URL of its webhook_id (create_targets_of writes
-- w.id with w.url, nothing changes a webhook's URL, and 0020 fixes both columns of a delivery), so
-- two webhook rows of one notice with one webhook_id would have had the same target, which
-- deliveries_target forbade. The check that a webhook row names its webhook and an e-mail row none
-- holds too: create_targets_of writes exactly that, and the API may not insert deliveries (0020).
-- It is what makes the webhook key bind: a webhook row without a webhook_id would escape it (NULLs
-- are distinct). A database that somehow breaks either fails here, naming the constraint or the
-- index, with nothing applied.
--
-- Inside the migration's transaction. The ALTER comes first: dropping a constraint takes ACCESS
-- EXCLUSIVE on deliveries until commit, and taking it after the index builds' SHARE lock would be
-- a lock upgrade, which can deadlock with a worker transaction that read deliveries and waits to
-- write them. So the API's reads of deliveries (a notice's detail, a retry) wait for the whole
-- migration: about 1 s over 1,000,000 deliveries here (both indexes built, the check scanned).
ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_target,
    ADD CONSTRAINT deliveries_webhook_named CHECK ((channel = 'webhook') = (webhook_id IS NOT NULL));
CREATE UNIQUE INDEX deliveries_webhook ON deliveries (notice_id, webhook_id) WHERE channel = 'webhook';
CREATE UNIQUE INDEX deliveries_email ON deliveries (notice_id, target) WHERE channel = 'email';
