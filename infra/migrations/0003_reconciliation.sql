-- Reconciliation: each visit's actual state, and a durable queue of visits to recompute.

ALTER TABLE visits
    ADD COLUMN payable_min   integer NOT NULL DEFAULT 0,
    ADD COLUMN banked_min    integer NOT NULL DEFAULT 0,
    ADD COLUMN reconciled_at timestamptz,
    -- When time alone may change the state (missed after start + missed_after_min, settled
    -- after end + settle_h); null once the state is final.
    ADD COLUMN next_check_at timestamptz;
CREATE INDEX visits_next_check ON visits (next_check_at) WHERE next_check_at IS NOT NULL;

-- Planned visits start out waiting for their "missed" threshold.
UPDATE visits SET next_check_at = planned_start WHERE status = 'planned';

-- Visits whose inputs changed (an event, an amendment, a cancellation). Written in the same
-- transaction as the change, so no change is ever left unreconciled.
CREATE TABLE reconcile_queue (
    tenant_id uuid NOT NULL,
    visit_id  uuid NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, visit_id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
