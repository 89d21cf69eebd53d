-- Fixes of the reconciliation review change the result of visits already reconciled. The visits whose
-- stored state they can change are queued, so the drainers reconcile them again after the upgrade (an
-- invoiced one is flagged for the next invoice run, as any change is) and `carebank reconcile` agrees with
-- what is stored.
-- Decision 152: an unplanned visit whose events all went to the visit they belonged to (an approved
-- `wrong_visit_selected` move, or a late check-in that re-matched its check-out, decision 20) is cancelled,
-- paying 0. The rules before it left such a visit `unplanned` (awaiting an approval there was nothing to
-- give) or, once its minutes had been approved, `planned` and then `missed`. A visit with no attendance
-- stored is all they could have left empty; one queued that still has events is reconciled to what it was.
INSERT INTO reconcile_queue (tenant_id, visit_id)
SELECT s.tenant_id, s.visit_id
FROM visit_states s
JOIN visit_plans p ON p.tenant_id = s.tenant_id AND p.id = s.visit_id
WHERE p.origin = 'unplanned' AND s.status <> 'cancelled'
  AND (jsonb_typeof(s.actual -> 'attendances') IS DISTINCT FROM 'array'
       OR jsonb_array_length(s.actual -> 'attendances') = 0);

-- Decision 153: a carer's attendance on a cancelled visit (an event accepted after the cancellation) is
-- shown on it as `extra_carer`; the rules before it dropped it. Every cancelled visit with an event.
INSERT INTO reconcile_queue (tenant_id, visit_id)
SELECT p.tenant_id, p.id
FROM visit_plans p
WHERE p.cancellation IS NOT NULL
  AND EXISTS (SELECT 1 FROM visit_events e WHERE e.tenant_id = p.tenant_id AND e.visit_id = p.id);
