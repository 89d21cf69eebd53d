-- Leaner bank writes (decisions 100-102). Every posting of a person's or the pool's account moves
-- one of that account's lots, so balances are read from lots (`bank_postings_to_lot` /
-- `_from_lot`) and a person's postings are listed through their lots: the two account indexes of
-- postings served only those reads and cost two index entries (on random pages) per posting.
DROP INDEX bank_postings_to;
DROP INDEX bank_postings_from;

-- Postings and lots keep their foreign keys to lots (and the queue to lots); those to providers,
-- contracts and visits, rows that are never deleted, checked only that an id taken from a row
-- just read exists, each a key-share lock on a row every concurrent movement of the ledger shares.
-- `carebank check` verifies them set-wise instead, and more: a posting's lots are of its ledger and
-- accounts, a lot's contract is of its provider.
ALTER TABLE bank_postings
    DROP CONSTRAINT bank_postings_tenant_id_provider_id_fkey,
    DROP CONSTRAINT bank_postings_tenant_id_visit_id_fkey;
ALTER TABLE bank_lots
    DROP CONSTRAINT bank_lots_tenant_id_provider_id_fkey,
    DROP CONSTRAINT bank_lots_tenant_id_contract_id_fkey,
    DROP CONSTRAINT bank_lots_tenant_id_visit_id_fkey;
