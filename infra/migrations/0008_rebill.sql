-- A visit whose reconciled state was written since an invoice run last looked at it. Set in the
-- same transaction as the state, cleared by the run that bills (or adjusts) the visit: no
-- change can slip between a run's read and its commit.
ALTER TABLE visits ADD COLUMN rebill boolean NOT NULL DEFAULT false;
CREATE INDEX visits_rebill ON visits (tenant_id, contract_id) WHERE rebill;
