-- Decision 152: an unplanned visit whose events all went to the visit they belonged to (an approved
-- `wrong_visit_selected` move, or a late check-in that re-matched its check-out, decision 20) is cancelled,
-- paying 0. The rules before it left such a visit `unplanned` (awaiting an approval there was nothing to
-- give) or, once its minutes had been approved, `planned` and then `missed`. Those visits are queued, so the
-- drainers reconcile them again after the upgrade (an invoiced one is flagged for the next run, as any
-- change is) and `carebank reconcile` agrees with what is stored. A visit with no attendance stored is all
-- the rules could have left empty; one queued that still has events is reconciled to what it was.
INSERT INTO reconcile_queue (tenant_id, visit_id)
SELECT s.tenant_id, s.visit_id
FROM visit_states s
JOIN visit_plans p ON p.tenant_id = s.tenant_id AND p.id = s.visit_id
WHERE p.origin = 'unplanned' AND s.status <> 'cancelled'
  AND (jsonb_typeof(s.actual -> 'attendances') IS DISTINCT FROM 'array'
       OR jsonb_array_length(s.actual -> 'attendances') = 0)
ON CONFLICT (tenant_id, visit_id) DO NOTHING;
