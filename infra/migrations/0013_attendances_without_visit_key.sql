-- Attendances are written only by reconciliation, for visits it has just read and locked in the
-- same transaction, and visits are never deleted: the foreign key to visits checked what cannot be
-- otherwise, with one lookup into `visits` per attendance written (about half the cost of syncing a
-- batch's attendances). Decision 113.
ALTER TABLE attendances DROP CONSTRAINT attendances_tenant_id_visit_id_fkey;
