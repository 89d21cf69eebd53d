-- The overlap pass looks for a carer's attendances that overlap another. An attendance may last up to
-- two days, so each lookup read two days of the carer's attendances from the heap (32 of them for a
-- carer with 16 visits a day). Nearly all last under 12 hours: those are found among the attendances
-- starting in the 12 hours before, and the few longer ones in this small index of their own
-- (`store._PARTNERS`, decision 135).
CREATE INDEX attendances_long_by_carer ON attendances (tenant_id, carer_id, check_in)
    WHERE check_out - check_in > interval '12 hours';
