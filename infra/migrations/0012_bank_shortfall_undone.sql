-- A shortfall can be undone (decision 48, revised): when a visit's reconciliation later goes back
-- up (an accrual) or down (a bank-funded delivery), the minutes first cancel what was recorded short,
-- as a row of negative minutes at the same rate, which the next invoice carries as a credit line.
ALTER TABLE bank_shortfalls
    DROP CONSTRAINT bank_shortfalls_minutes_check,
    ADD CONSTRAINT bank_shortfalls_minutes_check CHECK (minutes <> 0);
