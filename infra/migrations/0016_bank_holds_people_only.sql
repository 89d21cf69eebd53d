-- Holds earmark people's lots only (a bank-funded visit's person, a transfer's giver): the pool is
-- never held, so reading what is available of its lots (hundreds at a busy provider) skips the
-- held sums (decision 105). PostgreSQL now refuses a hold on any other account.
ALTER TABLE bank_holds ADD CONSTRAINT bank_holds_people_only CHECK (account LIKE 'person:%');
