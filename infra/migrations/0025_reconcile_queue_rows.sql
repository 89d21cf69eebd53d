-- The reconcile queue becomes a log of rows, a visit possibly queued more than once (decision 154).
-- With one row per visit, queueing a visit again wrote to the row a drainer's batch had already
-- claimed, and so waited for that whole batch to commit: a carer's event could wait a second behind
-- a reconciliation of two thousand other visits. Now queueing only inserts, and a batch deletes the
-- rows it took, so a row queued while it ran stays for the next. The key keeps tenant_id first and
-- serves the look-ups by visit as the old one did.
ALTER TABLE reconcile_queue DROP CONSTRAINT reconcile_queue_pkey;
ALTER TABLE reconcile_queue ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE reconcile_queue ADD PRIMARY KEY (tenant_id, visit_id, id);
