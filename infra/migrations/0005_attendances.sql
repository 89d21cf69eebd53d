-- Each visit's reconciled attendances, one row per carer with a pair, kept with the visit's
-- state: what the `overlapping_visits` pass (one carer in two places at once) reads.

CREATE TABLE attendances (
    tenant_id uuid NOT NULL,
    visit_id  uuid NOT NULL,
    carer_id  uuid NOT NULL,
    check_in  timestamptz NOT NULL,
    check_out timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, visit_id, carer_id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id),
    CHECK (check_out > check_in),
    -- Longer presences are mistakes awaiting amendment: they are not stored, and so never "overlap".
    CHECK (check_out - check_in <= interval '2 days')
);
CREATE INDEX attendances_by_carer ON attendances (tenant_id, carer_id, check_in);
