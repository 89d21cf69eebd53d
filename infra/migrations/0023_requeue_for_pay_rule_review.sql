-- Fixes of the pay-rules review change the result of visits already reconciled. The visits whose stored
-- state they can change are queued, so the drainers reconcile them again after the upgrade (an invoiced
-- one is flagged for the next invoice run, as any change is, and the bank is corrected), and
-- `carebank reconcile` agrees with what is stored.
-- Decision 141: a met outcome-based visit pays at least planned, not at most, so a counted attendance
-- longer than planned (an approved extension, or no cap) keeps what time and task pays past the plan.
INSERT INTO reconcile_queue (tenant_id, visit_id)
SELECT s.tenant_id, s.visit_id
FROM visit_states s
JOIN visit_plans p ON p.tenant_id = s.tenant_id AND p.id = s.visit_id
JOIN contracts c ON c.tenant_id = p.tenant_id AND c.id = p.contract_id
WHERE s.status = 'completed' AND c.model = 'outcome_based' AND p.funding = 'package'
  AND jsonb_typeof(s.actual -> 'attendances') = 'array'
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(s.actual -> 'attendances') a
              WHERE (a ->> 'actual_seconds')::bigint > p.planned_min * 60)
ON CONFLICT (tenant_id, visit_id) DO NOTHING;

-- Decision 142: delivered time is the time at least one carer was present, an extra carer's too, so a
-- met visit that banked with an uncounted attendance may bank less.
INSERT INTO reconcile_queue (tenant_id, visit_id)
SELECT s.tenant_id, s.visit_id
FROM visit_states s
WHERE s.status = 'completed' AND s.banked_min > 0
  AND jsonb_typeof(s.actual -> 'attendances') = 'array'
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(s.actual -> 'attendances') a WHERE NOT (a ->> 'counted')::boolean)
ON CONFLICT (tenant_id, visit_id) DO NOTHING;
