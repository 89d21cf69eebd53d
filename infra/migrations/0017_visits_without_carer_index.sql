-- No query can use the GIN index on visits.carer_ids: the carer filters ask `$carer = ANY(carer_ids)`,
-- which GIN does not serve (the tenant and time indexes do, the carer being a filter on them). Every
-- reconciled visit's new row version still paid an entry in it (about 3 µs of PostgreSQL a visit
-- of a million-visit recompute, decision 121).
DROP INDEX visits_by_carer;
