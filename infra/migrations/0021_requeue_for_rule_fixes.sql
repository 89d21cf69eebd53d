-- Three fixes of session 11 change the result of visits already reconciled: a provider's requested
-- visit that nobody approved no longer pays a short-notice cancellation, a visit is `verified_in_home`
-- only when all its attendances are (an extra carer's too; decision 131), and a chain of moves takes
-- a carer's events to its end (decision 133). The visits whose stored state they can change are
-- queued, so the drainers reconcile them again after the upgrade (an invoiced one is flagged for the
-- next invoice run, as any change is), and `carebank reconcile` agrees with what is stored.
INSERT INTO reconcile_queue (tenant_id, visit_id)
SELECT p.tenant_id, p.id FROM visit_plans p
WHERE p.approval = 'pending' AND p.cancellation IS NOT NULL
UNION
SELECT s.tenant_id, s.visit_id FROM visit_states s
WHERE jsonb_typeof(s.actual -> 'attendances') = 'array'
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(s.actual -> 'attendances') a WHERE NOT (a ->> 'counted')::boolean)
UNION
SELECT m.tenant_id, unnest(ARRAY[m.visit_id, m.move_to_visit_id]) FROM amendments m
WHERE m.status = 'approved' AND m.move_to_visit_id IS NOT NULL
ON CONFLICT (tenant_id, visit_id) DO NOTHING;
