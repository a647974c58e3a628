-- The register: catalogue, enterprises, labs, API keys and instruments.
-- Conventions: ids are uuid, instants timestamptz (UTC), calendar facts date.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE catalog_items (
    code                   text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{1,63}$'),
    name_zh                text NOT NULL,
    name_en                text NOT NULL,
    regime                 text NOT NULL CHECK (regime IN (
                               'periodic', 'initial_only_limited_life',
                               'initial_only_scrap_on_failure', 'type_approval_only')),
    compulsory_uses        text[] NOT NULL DEFAULT '{}' CHECK (compulsory_uses <@ ARRAY[
                               'trade_settlement', 'safety_protection', 'medical',
                               'environmental_monitoring']),
    legal_max_cycle_months integer CHECK (legal_max_cycle_months > 0),
    default_cycle_months   integer CHECK (default_cycle_months > 0
                               AND default_cycle_months <= coalesce(legal_max_cycle_months, default_cycle_months)),
    regulation             text NOT NULL,
    catalog_version        text NOT NULL,
    -- Only items verified on a cycle (or a use life) have one.
    CHECK ((regime IN ('periodic', 'initial_only_limited_life')) = (default_cycle_months IS NOT NULL))
);

CREATE TABLE enterprises (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    credit_code            text NOT NULL UNIQUE CHECK (credit_code ~ '^[0-9A-HJ-NPQRTUWXY]{18}$'),
    region_code            text NOT NULL CHECK (region_code ~ '^[0-9]{6}$'),
    timezone               text NOT NULL DEFAULT 'Asia/Shanghai',
    period_rule            text NOT NULL DEFAULT 'inclusive_minus_one'
                               CHECK (period_rule IN ('inclusive_minus_one', 'civil_code', 'end_of_year')),
    reminder_days          integer[] NOT NULL DEFAULT '{30,7}' CHECK (cardinality(reminder_days) >= 1),
    rotation_reminder_days integer[] NOT NULL DEFAULT '{90,30}' CHECK (cardinality(rotation_reminder_days) >= 1),
    version                integer NOT NULL DEFAULT 1,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
-- Regulators read by region-code prefix.
CREATE INDEX enterprises_region ON enterprises (region_code text_pattern_ops);

CREATE TABLE labs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    accreditation_no text NOT NULL CHECK (length(accreditation_no) BETWEEN 1 AND 100),
    region_code      text NOT NULL CHECK (region_code ~ '^[0-9]{6}$'),
    scope            text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prefix         text NOT NULL UNIQUE,
    secret_sha256  bytea NOT NULL CHECK (length(secret_sha256) = 32),
    role           text NOT NULL CHECK (role IN ('admin', 'enterprise', 'lab', 'regulator')),
    enterprise_id  uuid REFERENCES enterprises (id),
    lab_id         uuid REFERENCES labs (id),
    region_code    text CHECK (region_code ~ '^([0-9]{2}){1,3}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    last_used_at   timestamptz,
    -- Each role carries exactly its own scope.
    CHECK ((role = 'enterprise') = (enterprise_id IS NOT NULL)),
    CHECK ((role = 'lab') = (lab_id IS NOT NULL)),
    CHECK ((role = 'regulator') = (region_code IS NOT NULL))
);

CREATE TABLE instruments (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    enterprise_id    uuid NOT NULL REFERENCES enterprises (id),
    catalog_code     text REFERENCES catalog_items (code),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    model            text NOT NULL DEFAULT '',
    serial_no        text NOT NULL CHECK (length(serial_no) BETWEEN 1 AND 100),
    manufacturer     text NOT NULL DEFAULT '',
    management_no    text CHECK (length(management_no) BETWEEN 1 AND 100),
    measuring_range  text,
    accuracy_class   text,
    mpe              text,
    location         text,
    department       text,
    legal_use        text NOT NULL DEFAULT 'none' CHECK (legal_use IN (
                         'trade_settlement', 'safety_protection', 'medical',
                         'environmental_monitoring', 'none')),
    -- Derived from the catalogue item and the use when written (service/catalog/rules.py), stored
    -- so that list filters need no join; a catalogue migration that changes a regime recomputes it.
    regime           text NOT NULL CHECK (regime IN (
                         'periodic', 'initial_only_limited_life',
                         'initial_only_scrap_on_failure', 'not_controlled')),
    -- The instrument's own cycle; null means the catalogue default.
    cycle_months     integer CHECK (cycle_months BETWEEN 1 AND 1200),
    lifecycle        text NOT NULL DEFAULT 'in_service' CHECK (lifecycle IN (
                         'in_service', 'sealed', 'failed', 'scrapped', 'replaced',
                         'pending_verification')),
    last_verified_on date,
    -- Denormalised from the governing certificate or the registration, so that due scans are
    -- index range scans.
    valid_until      date,
    validity_source  text NOT NULL DEFAULT 'computed' CHECK (validity_source IN ('computed', 'printed')),
    -- One sort key for "what lapses first": never-expiring rows sort last.
    due_key          date NOT NULL GENERATED ALWAYS AS (coalesce(valid_until, 'infinity'::date)) STORED,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instruments_identity UNIQUE (enterprise_id, manufacturer, model, serial_no),
    CHECK (valid_until IS NULL OR (last_verified_on IS NOT NULL AND valid_until >= last_verified_on))
);
CREATE UNIQUE INDEX instruments_management_no ON instruments (enterprise_id, management_no)
    WHERE management_no IS NOT NULL;
-- The register in due order, and the same per lifecycle: every status filter is a range of one.
CREATE INDEX instruments_due ON instruments (enterprise_id, due_key, id);
CREATE INDEX instruments_lifecycle_due ON instruments (enterprise_id, lifecycle, due_key, id);
-- Free-text search over name, serial and management number.
CREATE INDEX instruments_search ON instruments
    USING gin ((name || ' ' || serial_no || ' ' || coalesce(management_no, '')) gin_trgm_ops);
