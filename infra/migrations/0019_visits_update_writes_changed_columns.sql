-- An UPDATE through the `visits` view writes only the columns it changed (decision 125).
--
-- PostgreSQL reads a view's row (OLD) from the statement's snapshot, does not lock it, and never
-- re-checks the statement's WHERE against a newer version. 0018's trigger wrote every column of a
-- table from NEW (OLD with the SET applied), so an UPDATE that waited for a row another transaction
-- was changing wrote the snapshot's values back over what that transaction had committed: an approval
-- undone by a check-in that moved the visit's start, or the start moved back by the approval. Each
-- column is now NEW's only where NEW differs from OLD; otherwise the row keeps its latest value (a SET
-- expression on the target column reads the version the UPDATE writes over). Writers that read, decide
-- and then write still lock the visit first (`FOR NO KEY UPDATE` through the view locks both rows);
-- writers that must re-check a condition against the latest row update the base table directly.
CREATE OR REPLACE FUNCTION visits_update() RETURNS trigger LANGUAGE plpgsql AS $$
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
        UPDATE visit_plans p SET
               person_id = CASE WHEN NEW.person_id IS DISTINCT FROM OLD.person_id THEN NEW.person_id ELSE p.person_id END,
               contract_id = CASE WHEN NEW.contract_id IS DISTINCT FROM OLD.contract_id
                                  THEN NEW.contract_id ELSE p.contract_id END,
               provider_id = CASE WHEN NEW.provider_id IS DISTINCT FROM OLD.provider_id
                                  THEN NEW.provider_id ELSE p.provider_id END,
               plan_id = CASE WHEN NEW.plan_id IS DISTINCT FROM OLD.plan_id THEN NEW.plan_id ELSE p.plan_id END,
               slot = CASE WHEN NEW.slot IS DISTINCT FROM OLD.slot THEN NEW.slot ELSE p.slot END,
               local_date = CASE WHEN NEW.local_date IS DISTINCT FROM OLD.local_date
                                 THEN NEW.local_date ELSE p.local_date END,
               planned_start = CASE WHEN NEW.planned_start IS DISTINCT FROM OLD.planned_start
                                    THEN NEW.planned_start ELSE p.planned_start END,
               planned_min = CASE WHEN NEW.planned_min IS DISTINCT FROM OLD.planned_min
                                  THEN NEW.planned_min ELSE p.planned_min END,
               carers_required = CASE WHEN NEW.carers_required IS DISTINCT FROM OLD.carers_required
                                      THEN NEW.carers_required ELSE p.carers_required END,
               carer_ids = CASE WHEN NEW.carer_ids IS DISTINCT FROM OLD.carer_ids THEN NEW.carer_ids ELSE p.carer_ids END,
               outcome_ids = CASE WHEN NEW.outcome_ids IS DISTINCT FROM OLD.outcome_ids
                                  THEN NEW.outcome_ids ELSE p.outcome_ids END,
               funding = CASE WHEN NEW.funding IS DISTINCT FROM OLD.funding THEN NEW.funding ELSE p.funding END,
               origin = CASE WHEN NEW.origin IS DISTINCT FROM OLD.origin THEN NEW.origin ELSE p.origin END,
               approval = CASE WHEN NEW.approval IS DISTINCT FROM OLD.approval THEN NEW.approval ELSE p.approval END,
               band_start = CASE WHEN NEW.band_start IS DISTINCT FROM OLD.band_start
                                 THEN NEW.band_start ELSE p.band_start END,
               cancellation = CASE WHEN NEW.cancellation IS DISTINCT FROM OLD.cancellation
                                   THEN NEW.cancellation ELSE p.cancellation END,
               created_at = CASE WHEN NEW.created_at IS DISTINCT FROM OLD.created_at
                                 THEN NEW.created_at ELSE p.created_at END,
               updated_at = CASE WHEN NEW.updated_at IS DISTINCT FROM OLD.updated_at
                                 THEN NEW.updated_at ELSE p.updated_at END
        WHERE p.tenant_id = OLD.tenant_id AND p.id = OLD.id;
    END IF;
    IF (NEW.status, NEW.actual, NEW.exceptions, NEW.payable_min, NEW.banked_min, NEW.reconciled_at,
        NEW.next_check_at)
       IS DISTINCT FROM
       (OLD.status, OLD.actual, OLD.exceptions, OLD.payable_min, OLD.banked_min, OLD.reconciled_at,
        OLD.next_check_at) THEN
        UPDATE visit_states s SET
               status = CASE WHEN NEW.status IS DISTINCT FROM OLD.status THEN NEW.status ELSE s.status END,
               actual = CASE WHEN NEW.actual IS DISTINCT FROM OLD.actual THEN NEW.actual ELSE s.actual END,
               exceptions = CASE WHEN NEW.exceptions IS DISTINCT FROM OLD.exceptions
                                 THEN NEW.exceptions ELSE s.exceptions END,
               payable_min = CASE WHEN NEW.payable_min IS DISTINCT FROM OLD.payable_min
                                  THEN NEW.payable_min ELSE s.payable_min END,
               banked_min = CASE WHEN NEW.banked_min IS DISTINCT FROM OLD.banked_min
                                 THEN NEW.banked_min ELSE s.banked_min END,
               reconciled_at = CASE WHEN NEW.reconciled_at IS DISTINCT FROM OLD.reconciled_at
                                    THEN NEW.reconciled_at ELSE s.reconciled_at END,
               next_check_at = CASE WHEN NEW.next_check_at IS DISTINCT FROM OLD.next_check_at
                                    THEN NEW.next_check_at ELSE s.next_check_at END
        WHERE s.tenant_id = OLD.tenant_id AND s.visit_id = OLD.id;
    END IF;
    RETURN NEW;
END $$;
