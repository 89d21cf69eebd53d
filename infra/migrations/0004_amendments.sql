-- Amendments (corrections of a visit, approved or rejected) and exception acknowledgements.

CREATE TABLE amendments (
    tenant_id        uuid NOT NULL REFERENCES tenants (tenant_id),
    id               uuid NOT NULL,
    visit_id         uuid NOT NULL,
    carer_id         uuid NOT NULL,
    check_in_at      timestamptz,
    check_out_at     timestamptz,
    extension_min    integer CHECK (extension_min > 0),
    planned_min      integer CHECK (planned_min > 0),
    move_to_visit_id uuid,
    reason_code      text NOT NULL,
    note             text,
    proposed_by      text NOT NULL,
    proposed_role    text NOT NULL,
    proposed_at      timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    auto_approved    boolean NOT NULL DEFAULT false,
    decided_by       text,
    decided_at       timestamptz,
    -- Payable and banked minutes of the visit before the amendment and as it would be after,
    -- when proposed and again when decided: the trail a finance officer reads.
    payable_before   integer NOT NULL,
    payable_after    integer NOT NULL,
    banked_before    integer NOT NULL,
    banked_after     integer NOT NULL,
    decided_payable_before integer,
    decided_payable_after  integer,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id),
    FOREIGN KEY (tenant_id, carer_id) REFERENCES carers (tenant_id, id),
    FOREIGN KEY (tenant_id, move_to_visit_id) REFERENCES visits (tenant_id, id),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX amendments_by_visit ON amendments (tenant_id, visit_id, decided_at);
CREATE INDEX amendments_by_target ON amendments (tenant_id, move_to_visit_id) WHERE move_to_visit_id IS NOT NULL;
CREATE INDEX amendments_pending ON amendments (tenant_id, proposed_at) WHERE status = 'pending';

CREATE TABLE exception_acks (
    tenant_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    visit_id        uuid NOT NULL,
    kind            text NOT NULL,
    acknowledged_by text NOT NULL,
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, visit_id, kind),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
CREATE INDEX visits_with_exceptions ON visits (tenant_id, id) WHERE cardinality(exceptions) > 0;
