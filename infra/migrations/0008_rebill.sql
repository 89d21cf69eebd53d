-- Billing flags on visits, set in the same transactions as the facts they summarise:
-- `invoiced` once a run has given the visit its lines; `rebill` whenever its reconciled state is
-- written, cleared by the run that bills or adjusts it. A run locks the rows it reads, so no change
-- slips between its read and its commit, and it finds its work without scanning invoice lines.
ALTER TABLE visits
    ADD COLUMN invoiced boolean NOT NULL DEFAULT false,
    ADD COLUMN rebill boolean NOT NULL DEFAULT false;
CREATE INDEX visits_to_rebill ON visits (tenant_id, contract_id) WHERE rebill AND invoiced;
CREATE INDEX visits_to_bill ON visits (tenant_id, contract_id, planned_start) WHERE NOT invoiced;
