-- Leaner visit_events (decision 95). Every accepted event paid four foreign-key checks, one
-- lookup and one key-share row lock each (on its tenant's row, which every concurrent group
-- shares, and on its carer, person and visit), about half of PostgreSQL's cost of the insert.
-- They go; one set-wise check per statement keeps what they checked, and more: every visit
-- named exists in the event's tenant with the event's person, and every carer exists there
-- (the tenant follows from either). Visits, people and carers are never deleted (cancelled or
-- made inactive instead), which is why the keys' guard against deletion is not replaced.
ALTER TABLE visit_events
    DROP CONSTRAINT visit_events_tenant_id_fkey,
    DROP CONSTRAINT visit_events_tenant_id_carer_id_fkey,
    DROP CONSTRAINT visit_events_tenant_id_visit_id_fkey,
    DROP CONSTRAINT visit_events_tenant_id_person_id_fkey;

CREATE FUNCTION visit_events_references_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM written e
               WHERE NOT EXISTS (SELECT 1 FROM visits v
                                 WHERE v.tenant_id = e.tenant_id AND v.id = e.visit_id
                                   AND v.person_id = e.person_id)) THEN
        RAISE EXCEPTION 'a visit event names a visit that does not exist with its person'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM written e
               WHERE NOT EXISTS (SELECT 1 FROM carers c WHERE c.tenant_id = e.tenant_id AND c.id = e.carer_id)) THEN
        RAISE EXCEPTION 'a visit event names a carer that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

-- A trigger with a transition table serves one kind of statement: one for inserts (and COPY),
-- one for updates (a re-matched check-out moves to another visit).
CREATE TRIGGER visit_events_references_on_insert
    AFTER INSERT ON visit_events REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION visit_events_references_exist();
CREATE TRIGGER visit_events_references_on_update
    AFTER UPDATE ON visit_events REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION visit_events_references_exist();

-- Its readers of (person, carer, time) all ask for check-ins (the latest check-in before a
-- check-out, the check-ins between a check-in and the check-outs it takes over); person-only
-- check-outs have their own partial index. Half the entries.
CREATE INDEX visit_events_check_ins_by_person_carer ON visit_events (tenant_id, person_id, carer_id, occurred_at)
    WHERE kind = 'check_in';
DROP INDEX visit_events_by_person_carer;

-- Ingest binds a group's events as one array of this row type (services/ingest/store.py,
-- `EventRow`, in this order): a value per event, where an array per column made the driver
-- inspect every value of every column. A column added to visit_events that ingest writes is
-- added here too.
CREATE TYPE visit_event_row AS (
    event_id        uuid,
    carer_id        uuid,
    provider_id     uuid,
    person_id       uuid,
    posted_visit_id uuid,
    visit_id        uuid,
    kind            text,
    occurred_at     timestamptz,
    method          text,
    lat             double precision,
    lon             double precision,
    accuracy_m      double precision,
    tag             text,
    phone           text,
    device_id       text,
    outcomes        text,  -- JSON, cast on insert (the driver binds jsonb as text, composites only in binary)
    note            text,
    verified        boolean,
    content_hash    text
);
