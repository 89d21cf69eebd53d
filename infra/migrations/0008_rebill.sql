-- Billing state of visits, in a narrow table of its own (so marking 100,000 visits billed does not
-- rewrite 100,000 wide visit rows): a row once a run has given the visit its lines; `rebill` set
-- whenever the visit's reconciled state is written again, cleared by the run that adjusts it.
-- Runs lock the visit rows they read, so no change slips between a run's read and its commit.
CREATE TABLE visit_billing (
    tenant_id uuid NOT NULL,
    visit_id  uuid NOT NULL,
    rebill    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, visit_id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
CREATE INDEX visit_billing_rebill ON visit_billing (tenant_id, visit_id) WHERE rebill;
