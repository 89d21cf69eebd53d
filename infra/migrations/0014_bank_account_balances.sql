-- A person's balance kept on its lock row (decision 104), as a ledger keeps posted totals on its
-- accounts: every movement of a person's minutes locks that row first and adds its postings' net to
-- it in the statement that writes them, so the cap is judged from the row just locked instead of
-- summing every lot's remainder. The pool keeps none (NULL): crediting the pool takes no lock, so
-- accrual batches do not queue behind one another. `carebank check` verifies balance = sum of lots.
ALTER TABLE bank_accounts ADD COLUMN balance integer;

-- Every account that holds lots has its lock row (movements make it before their first posting).
INSERT INTO bank_accounts (tenant_id, provider_id, account)
    SELECT DISTINCT tenant_id, provider_id, account FROM bank_lots
    ON CONFLICT DO NOTHING;

UPDATE bank_accounts SET balance = 0 WHERE account <> 'pool';
UPDATE bank_accounts a SET balance = m.balance
FROM (
    SELECT tenant_id, provider_id, account, sum(amount)::int AS balance FROM (
        SELECT tenant_id, provider_id, to_account AS account, minutes AS amount FROM bank_postings
        UNION ALL
        SELECT tenant_id, provider_id, from_account, -minutes FROM bank_postings) moved
    WHERE account LIKE 'person:%'
    GROUP BY tenant_id, provider_id, account) m
WHERE a.tenant_id = m.tenant_id AND a.provider_id = m.provider_id AND a.account = m.account;

-- Kept for people, never for the pool; and PostgreSQL itself now refuses a person's balance below 0.
ALTER TABLE bank_accounts
    ADD CONSTRAINT bank_accounts_balance_kept CHECK ((account = 'pool') = (balance IS NULL)),
    ADD CONSTRAINT bank_accounts_balance_not_negative CHECK (balance >= 0);
