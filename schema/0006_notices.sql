-- Reminders, overdue notices and result events: the notices table is the outbox and the log in
-- one (design.md §6; stack.md §4.7). Redis only carries the work of the moment.

ALTER TABLE enterprises
    ADD COLUMN overdue_repeat_days integer NOT NULL DEFAULT 7 CHECK (overdue_repeat_days BETWEEN 1 AND 366),
    ADD COLUMN escalate_after_days integer NOT NULL DEFAULT 30 CHECK (escalate_after_days BETWEEN 1 AND 3660),
    ADD COLUMN notify_emails text[] NOT NULL DEFAULT '{}' CHECK (cardinality(notify_emails) <= 20),
    ADD COLUMN digest boolean NOT NULL DEFAULT false;

CREATE TABLE notices (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    enterprise_id  uuid NOT NULL REFERENCES enterprises (id),
    instrument_id  uuid NOT NULL REFERENCES instruments (id),
    kind           text NOT NULL CHECK (kind IN (
                       'due_soon', 'rotation_due', 'overdue', 'escalation', 'result_recorded',
                       'verification_failed')),
    -- Who it is for: the enterprise, or for escalations the regulators of its region.
    audience       text NOT NULL CHECK (audience IN ('enterprise', 'regulator')),
    region_code    text NOT NULL,
    -- The valid_until it is about (for result events: the result's performed_on), and which step
    -- of its series (days before valid_until for reminders, the repeat number for overdue notices).
    cycle          date NOT NULL,
    step           integer NOT NULL,
    certificate_id uuid REFERENCES certificates (id),
    due_on         date NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN (
                       'pending', 'dispatched', 'delivered', 'failed', 'cancelled')),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error     text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    dispatched_at  timestamptz,
    closed_at      timestamptz,
    CHECK ((certificate_id IS NULL) = (kind NOT IN ('result_recorded', 'verification_failed')))
);
-- Planning twice creates nothing new.
CREATE UNIQUE INDEX notices_series ON notices (instrument_id, kind, cycle, step) WHERE certificate_id IS NULL;
CREATE UNIQUE INDEX notices_event ON notices (certificate_id, kind) WHERE certificate_id IS NOT NULL;
-- The outbox: what waits to be dispatched, and what was dispatched and may be stuck.
CREATE INDEX notices_outbox ON notices (next_attempt_at) WHERE status IN ('pending', 'dispatched');
CREATE INDEX notices_enterprise ON notices (enterprise_id, created_at DESC, id DESC);
CREATE INDEX notices_region ON notices (region_code text_pattern_ops, created_at DESC) WHERE audience = 'regulator';
CREATE INDEX notices_instrument ON notices (instrument_id, created_at DESC);

CREATE TABLE webhooks (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The owner: an enterprise, or a regulator's region prefix.
    enterprise_id uuid REFERENCES enterprises (id),
    region_code   text CHECK (region_code ~ '^([0-9]{2}){1,3}$'),
    url           text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    -- The HMAC key: needed in clear to sign, so it is kept as given and never shown again.
    secret        text NOT NULL CHECK (length(secret) BETWEEN 16 AND 200),
    events        text[] NOT NULL DEFAULT '{}',
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    CHECK ((enterprise_id IS NULL) <> (region_code IS NULL))
);
CREATE INDEX webhooks_enterprise ON webhooks (enterprise_id) WHERE active;
CREATE INDEX webhooks_region ON webhooks (region_code) WHERE active;

-- One row per notice and target (a webhook, an e-mail address); every attempt is a row below it.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    notice_id       uuid NOT NULL REFERENCES notices (id),
    channel         text NOT NULL CHECK (channel IN ('webhook', 'email')),
    webhook_id      uuid REFERENCES webhooks (id),
    target          text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    CONSTRAINT deliveries_target UNIQUE (notice_id, channel, target)
);

CREATE TABLE delivery_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES deliveries (id),
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error       text,
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    UNIQUE (delivery_id, attempt)
);
