-- A visit's reconciled state moves out of its plan row into a narrow table of its own (decision 122).
--
-- Reconciliation rewrites a visit's state every time an input changes, and the first time nearly
-- always changes every state column. On the one wide `visits` table each such write was a new
-- version of the whole row with an entry in every one of its indexes (six full ones, two of them
-- at a random leaf per visit), about half of PostgreSQL's time in a million-visit recompute. In
-- `visit_states` the same write has three small indexes, and the plan row is left alone.
--
-- `visits` stays the name every reader and writer uses: a view joining the two tables, with
-- triggers that route a write through it to whichever table holds the columns it changes.
-- Reconciliation, the hot path, reads and writes `visit_plans` and `visit_states` directly.

ALTER TABLE visits RENAME TO visit_plans;

CREATE TABLE visit_states (
    tenant_id     uuid NOT NULL,
    visit_id      uuid NOT NULL,
    status        text NOT NULL
                  CHECK (status IN ('planned', 'in_progress', 'completed', 'missed', 'cancelled', 'unplanned')),
    actual        jsonb,
    exceptions    text[] NOT NULL DEFAULT '{}',
    payable_min   integer NOT NULL DEFAULT 0,
    banked_min    integer NOT NULL DEFAULT 0,
    reconciled_at timestamptz,
    -- When time alone may change the state (missed after start + missed_after_min, settled after
    -- end + settle_h); null once the state is final.
    next_check_at timestamptz,
    PRIMARY KEY (tenant_id, visit_id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visit_plans (tenant_id, id)
);

INSERT INTO visit_states (tenant_id, visit_id, status, actual, exceptions, payable_min, banked_min, reconciled_at,
                          next_check_at)
SELECT tenant_id, id, status, actual, exceptions, payable_min, banked_min, reconciled_at, next_check_at
FROM visit_plans;

DROP INDEX visits_next_check, visits_with_exceptions, visits_alertable;
ALTER TABLE visit_plans
    DROP COLUMN status, DROP COLUMN actual, DROP COLUMN exceptions, DROP COLUMN payable_min,
    DROP COLUMN banked_min, DROP COLUMN reconciled_at, DROP COLUMN next_check_at;

CREATE INDEX visit_states_next_check ON visit_states (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX visit_states_with_exceptions ON visit_states (tenant_id, visit_id) WHERE cardinality(exceptions) > 0;
-- The monitoring worker's windows of every tenant's visits by planned start (the status it filters
-- on is now in the other table, so the partial index it had cannot be).
CREATE INDEX visit_plans_by_planned_start ON visit_plans (planned_start);

-- The columns in the order `visits` had them.
CREATE VIEW visits AS
SELECT p.tenant_id, p.id, p.person_id, p.contract_id, p.provider_id, p.plan_id, p.slot, p.local_date,
       p.planned_start, p.planned_min, p.carers_required, p.carer_ids, p.outcome_ids, p.funding, p.origin,
       p.approval, s.status, p.band_start, p.cancellation, s.actual, s.exceptions, p.created_at, p.updated_at,
       s.payable_min, s.banked_min, s.reconciled_at, s.next_check_at
FROM visit_plans p JOIN visit_states s ON s.tenant_id = p.tenant_id AND s.visit_id = p.id;

ALTER VIEW visits ALTER COLUMN carer_ids SET DEFAULT '{}';
ALTER VIEW visits ALTER COLUMN outcome_ids SET DEFAULT '{}';
ALTER VIEW visits ALTER COLUMN exceptions SET DEFAULT '{}';
ALTER VIEW visits ALTER COLUMN created_at SET DEFAULT now();
ALTER VIEW visits ALTER COLUMN updated_at SET DEFAULT now();
ALTER VIEW visits ALTER COLUMN payable_min SET DEFAULT 0;
ALTER VIEW visits ALTER COLUMN banked_min SET DEFAULT 0;

CREATE FUNCTION visits_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO visit_plans (tenant_id, id, person_id, contract_id, provider_id, plan_id, slot, local_date,
                             planned_start, planned_min, carers_required, carer_ids, outcome_ids, funding, origin,
                             approval, band_start, cancellation, created_at, updated_at)
    VALUES (NEW.tenant_id, NEW.id, NEW.person_id, NEW.contract_id, NEW.provider_id, NEW.plan_id, NEW.slot,
            NEW.local_date, NEW.planned_start, NEW.planned_min, NEW.carers_required, NEW.carer_ids, NEW.outcome_ids,
            NEW.funding, NEW.origin, NEW.approval, NEW.band_start, NEW.cancellation, NEW.created_at, NEW.updated_at);
    INSERT INTO visit_states (tenant_id, visit_id, status, actual, exceptions, payable_min, banked_min,
                              reconciled_at, next_check_at)
    VALUES (NEW.tenant_id, NEW.id, NEW.status, NEW.actual, NEW.exceptions, NEW.payable_min, NEW.banked_min,
            NEW.reconciled_at, NEW.next_check_at);
    RETURN NEW;
END $$;

-- Each table is written only when one of its columns changed, so a state change leaves the plan row
-- (and its indexes) alone. A visit's key never changes.
CREATE FUNCTION visits_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.tenant_id, NEW.id) IS DISTINCT FROM (OLD.tenant_id, OLD.id) THEN
        RAISE EXCEPTION 'a visit''s tenant_id and id cannot change';
    END IF;
    IF (NEW.person_id, NEW.contract_id, NEW.provider_id, NEW.plan_id, NEW.slot, NEW.local_date, NEW.planned_start,
        NEW.planned_min, NEW.carers_required, NEW.carer_ids, NEW.outcome_ids, NEW.funding, NEW.origin, NEW.approval,
        NEW.band_start, NEW.cancellation, NEW.created_at, NEW.updated_at)
       IS DISTINCT FROM
       (OLD.person_id, OLD.contract_id, OLD.provider_id, OLD.plan_id, OLD.slot, OLD.local_date, OLD.planned_start,
        OLD.planned_min, OLD.carers_required, OLD.carer_ids, OLD.outcome_ids, OLD.funding, OLD.origin, OLD.approval,
        OLD.band_start, OLD.cancellation, OLD.created_at, OLD.updated_at) THEN
        UPDATE visit_plans SET person_id = NEW.person_id, contract_id = NEW.contract_id,
               provider_id = NEW.provider_id, plan_id = NEW.plan_id, slot = NEW.slot, local_date = NEW.local_date,
               planned_start = NEW.planned_start, planned_min = NEW.planned_min,
               carers_required = NEW.carers_required, carer_ids = NEW.carer_ids, outcome_ids = NEW.outcome_ids,
               funding = NEW.funding, origin = NEW.origin, approval = NEW.approval, band_start = NEW.band_start,
               cancellation = NEW.cancellation, created_at = NEW.created_at, updated_at = NEW.updated_at
        WHERE tenant_id = OLD.tenant_id AND id = OLD.id;
    END IF;
    IF (NEW.status, NEW.actual, NEW.exceptions, NEW.payable_min, NEW.banked_min, NEW.reconciled_at,
        NEW.next_check_at)
       IS DISTINCT FROM
       (OLD.status, OLD.actual, OLD.exceptions, OLD.payable_min, OLD.banked_min, OLD.reconciled_at,
        OLD.next_check_at) THEN
        UPDATE visit_states SET status = NEW.status, actual = NEW.actual, exceptions = NEW.exceptions,
               payable_min = NEW.payable_min, banked_min = NEW.banked_min, reconciled_at = NEW.reconciled_at,
               next_check_at = NEW.next_check_at
        WHERE tenant_id = OLD.tenant_id AND visit_id = OLD.id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER visits_insert INSTEAD OF INSERT ON visits FOR EACH ROW EXECUTE FUNCTION visits_insert();
CREATE TRIGGER visits_update INSTEAD OF UPDATE ON visits FOR EACH ROW EXECUTE FUNCTION visits_update();
