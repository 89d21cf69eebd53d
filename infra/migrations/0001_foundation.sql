-- Foundation: tenants, identity and the catalog.
-- Every table of tenant data leads its primary key, foreign keys and unique constraints with
-- tenant_id, so the schema distributes on Citus by tenant_id unchanged.
-- admin_credentials is installation data (a Citus reference table), not tenant data.

CREATE TABLE tenants (
    tenant_id          uuid PRIMARY KEY,
    name               text NOT NULL,
    zone               text NOT NULL,
    holiday_region     text NOT NULL,
    currency           char(3) NOT NULL,
    max_event_age_days integer NOT NULL CHECK (max_event_age_days > 0),
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE admin_credentials (
    client_id   text PRIMARY KEY,
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE providers (
    tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    id         uuid NOT NULL,
    code       text NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, code)
);

CREATE TABLE carers (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    id          uuid NOT NULL,
    provider_id uuid NOT NULL,
    name        text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id)
);
CREATE INDEX carers_by_provider ON carers (tenant_id, provider_id, id);

CREATE TABLE credentials (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    client_id   text NOT NULL,
    secret_hash text NOT NULL,
    role        text NOT NULL CHECK (role IN ('commissioner', 'provider', 'carer')),
    provider_id uuid,
    carer_id    uuid,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, client_id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    FOREIGN KEY (tenant_id, carer_id) REFERENCES carers (tenant_id, id),
    CHECK (
        (role = 'commissioner' AND provider_id IS NULL AND carer_id IS NULL)
        OR (role = 'provider' AND provider_id IS NOT NULL AND carer_id IS NULL)
        OR (role = 'carer' AND provider_id IS NOT NULL AND carer_id IS NOT NULL)
    )
);

CREATE TABLE people (
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    id           uuid NOT NULL,
    reference    text NOT NULL,
    display_name text NOT NULL,
    lat          double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon          double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    geofence_m   integer NOT NULL CHECK (geofence_m > 0),
    tags         text[] NOT NULL DEFAULT '{}',
    phones       text[] NOT NULL DEFAULT '{}',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, reference)
);

CREATE TABLE contracts (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    id          uuid NOT NULL,
    provider_id uuid NOT NULL,
    model       text NOT NULL CHECK (model IN ('time_and_task', 'outcome_based')),
    period      text NOT NULL CHECK (period IN ('week', 'month')),
    rates       jsonb NOT NULL,
    pay_rules   jsonb NOT NULL,
    banking     jsonb NOT NULL,
    valid_from  date NOT NULL,
    valid_to    date,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX contracts_by_provider ON contracts (tenant_id, provider_id, id);

-- Idempotency-Key answers, kept 7 days. Admin calls have no tenant: they use the nil UUID,
-- which is why this table has no foreign key to tenants.
CREATE TABLE idempotency_keys (
    tenant_id    uuid NOT NULL,
    client_id    text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status_code  integer NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, client_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
