-- Visits whose `overlapping_visits` flag a reconciliation could not write, because another transaction
-- held the visit at that moment (decision 128). The overlap pass runs last in a reconciliation, with the
-- carers' attendances locked until it commits; it must never wait for a visit there (the holder may be
-- waiting for those carers), so it skips a partner visit that is locked and leaves it here. The key is
-- a fresh random id and there is no foreign key, so an insert never waits for anything. The queue
-- drainers recompute these visits' flags from the committed attendances (`jobs.recheck_overlaps`).
CREATE TABLE overlap_rechecks (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    visit_id uuid NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
