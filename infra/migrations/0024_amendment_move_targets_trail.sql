-- A move changes two visits (decision 31: its effect is recorded at the decision), but the decision
-- recorded the payable minutes of the visit the events left only. The visit they went to gets its
-- own before and after (decision 148); null for amendments that are no move, and for moves decided
-- before this migration (what they were then is not known now).
ALTER TABLE amendments
    ADD COLUMN decided_target_payable_before integer,
    ADD COLUMN decided_target_payable_after  integer;
