-- Planning (care plans, visits) and ingest (visit events).

CREATE TABLE care_plans (
    tenant_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    id              uuid NOT NULL,
    person_id       uuid NOT NULL,
    contract_id     uuid NOT NULL,
    provider_id     uuid NOT NULL,
    weekly_min      integer NOT NULL CHECK (weekly_min > 0),
    outcomes        jsonb NOT NULL,
    schedule        jsonb NOT NULL,
    valid_from      date NOT NULL,
    valid_to        date,
    horizon_days    integer NOT NULL CHECK (horizon_days > 0),
    generated_until date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, person_id) REFERENCES people (tenant_id, id),
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX care_plans_by_person ON care_plans (tenant_id, person_id, provider_id);

CREATE TABLE visits (
    tenant_id        uuid NOT NULL REFERENCES tenants (tenant_id),
    id               uuid NOT NULL,
    person_id        uuid NOT NULL,
    contract_id      uuid NOT NULL,
    provider_id      uuid NOT NULL,
    plan_id          uuid,
    slot             integer,
    local_date       date,
    planned_start    timestamptz NOT NULL,
    -- 0 only for an unplanned visit until its planned minutes are approved.
    planned_min      integer NOT NULL CHECK (planned_min > 0 OR origin = 'unplanned'),
    carers_required  smallint NOT NULL CHECK (carers_required BETWEEN 1 AND 2),
    carer_ids        uuid[] NOT NULL DEFAULT '{}',
    outcome_ids      text[] NOT NULL DEFAULT '{}',
    funding          text NOT NULL CHECK (funding IN ('package', 'bank')),
    origin           text NOT NULL CHECK (origin IN ('plan', 'commissioner', 'provider_request', 'unplanned')),
    approval         text NOT NULL CHECK (approval IN ('approved', 'pending')),
    status           text NOT NULL
                     CHECK (status IN ('planned', 'in_progress', 'completed', 'missed', 'cancelled', 'unplanned')),
    -- The instant whose band prices the visit: the original start when a provider moved it.
    band_start       timestamptz NOT NULL,
    cancellation     jsonb,
    actual           jsonb,
    exceptions       text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, person_id) REFERENCES people (tenant_id, id),
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    FOREIGN KEY (tenant_id, plan_id) REFERENCES care_plans (tenant_id, id),
    -- Generation is keyed by (plan, slot, local date): running it again creates nothing, and a
    -- moved visit keeps its key, so it is not recreated at its old slot.
    UNIQUE (tenant_id, plan_id, slot, local_date)
);
CREATE INDEX visits_by_start ON visits (tenant_id, planned_start);
CREATE INDEX visits_by_person ON visits (tenant_id, person_id, provider_id, planned_start);
CREATE INDEX visits_by_provider ON visits (tenant_id, provider_id, planned_start);
CREATE INDEX visits_by_carer ON visits USING gin (carer_ids);

CREATE TABLE visit_events (
    tenant_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    event_id        uuid NOT NULL,
    carer_id        uuid NOT NULL,
    provider_id     uuid NOT NULL,
    person_id       uuid NOT NULL,
    -- What the phone sent: a visit id, or null when it named only the person.
    posted_visit_id uuid,
    -- The match (DOMAIN.md "Matching"): the only column that may change, when a late check-in
    -- re-matches a person-only check-out.
    visit_id        uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('check_in', 'check_out')),
    occurred_at     timestamptz NOT NULL,
    method          text NOT NULL CHECK (method IN ('gps', 'nfc', 'qr', 'telephony', 'manual')),
    lat             double precision,
    lon             double precision,
    accuracy_m      double precision,
    tag             text,
    phone           text,
    device_id       text NOT NULL,
    outcomes        jsonb NOT NULL DEFAULT '[]',
    note            text,
    verified        boolean NOT NULL,
    content_hash    text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id),
    FOREIGN KEY (tenant_id, carer_id) REFERENCES carers (tenant_id, id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id),
    FOREIGN KEY (tenant_id, person_id) REFERENCES people (tenant_id, id)
);
CREATE INDEX visit_events_by_visit ON visit_events (tenant_id, visit_id, occurred_at);
CREATE INDEX visit_events_by_person_carer ON visit_events (tenant_id, person_id, carer_id, occurred_at);
-- Person-only check-outs, the only events a late check-in can re-match.
CREATE INDEX visit_events_person_only_check_outs ON visit_events (tenant_id, person_id, carer_id, occurred_at)
    WHERE kind = 'check_out' AND posted_visit_id IS NULL;

-- Accepted events are never changed or deleted: only the match may move.
CREATE FUNCTION visit_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'visit events are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF (NEW.tenant_id, NEW.event_id, NEW.carer_id, NEW.provider_id, NEW.person_id, NEW.posted_visit_id,
        NEW.kind, NEW.occurred_at, NEW.method, NEW.lat, NEW.lon, NEW.accuracy_m, NEW.tag, NEW.phone,
        NEW.device_id, NEW.outcomes, NEW.note, NEW.verified, NEW.content_hash, NEW.received_at)
       IS DISTINCT FROM
       (OLD.tenant_id, OLD.event_id, OLD.carer_id, OLD.provider_id, OLD.person_id, OLD.posted_visit_id,
        OLD.kind, OLD.occurred_at, OLD.method, OLD.lat, OLD.lon, OLD.accuracy_m, OLD.tag, OLD.phone,
        OLD.device_id, OLD.outcomes, OLD.note, OLD.verified, OLD.content_hash, OLD.received_at) THEN
        RAISE EXCEPTION 'visit events are never changed (only their match)' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER visit_events_immutable
    BEFORE UPDATE OR DELETE ON visit_events
    FOR EACH ROW EXECUTE FUNCTION visit_events_immutable();
