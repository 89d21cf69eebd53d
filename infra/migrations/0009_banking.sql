-- Outcome banking: a double-entry ledger in minutes per (tenant, provider), lots, holds and
-- the money claims (expiry credits, shortfalls) that reach invoices. Postings, lots, holds and
-- hold ends are append-only: a mistake is corrected by a reversing posting.

-- One row per account that can run short (a person's, the pool): the lock that orders every
-- movement (accounts are locked in name order, so concurrent movements never deadlock).
CREATE TABLE bank_accounts (
    tenant_id   uuid NOT NULL,
    provider_id uuid NOT NULL,
    account     text NOT NULL,
    PRIMARY KEY (tenant_id, provider_id, account),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id)
);

-- Minutes held for a person (or the pool) at the rate of the visit that earned them.
CREATE TABLE bank_lots (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    provider_id   uuid NOT NULL,
    contract_id   uuid NOT NULL,
    account       text NOT NULL,
    rate_pence_per_hour integer NOT NULL CHECK (rate_pence_per_hour >= 0),
    effective_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    -- The visit whose accrual made the lot (and every lot moved on from it).
    visit_id      uuid,
    origin_lot_id uuid,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id),
    FOREIGN KEY (tenant_id, origin_lot_id) REFERENCES bank_lots (tenant_id, id)
);
-- Account first: a person's lots are read at one provider or at all of them (bench/bank.py).
CREATE INDEX bank_lots_by_account ON bank_lots (tenant_id, account, provider_id, expires_at);
CREATE INDEX bank_lots_by_visit ON bank_lots (tenant_id, visit_id) WHERE visit_id IS NOT NULL;

-- Lots whose expiry has not been processed yet (a work queue, like reconcile_queue). A lot may
-- be queued more than once (again when a hold on it ends after its expiry): no unique key on the
-- lot, so queueing never waits on the expiry job that is taking the same lot off the queue.
CREATE TABLE bank_expiry_queue (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL,
    lot_id     uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lot_id) REFERENCES bank_lots (tenant_id, id)
);
CREATE INDEX bank_expiry_queue_due ON bank_expiry_queue (expires_at);

-- "from_account -> to_account": debits from, credits to; a balance is credits - debits. The
-- minutes leave from_lot (if any) and enter to_lot (if any): a lot's remainder is what entered
-- it minus what left it.
CREATE TABLE bank_postings (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    provider_id  uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('accrue', 'cap_overflow', 'take_back', 'redeploy',
                                               'redeploy_return', 'transfer', 'allocate', 'expire')),
    from_account text NOT NULL,
    to_account   text NOT NULL CHECK (to_account <> from_account),
    minutes      integer NOT NULL CHECK (minutes > 0),
    from_lot_id  uuid,
    to_lot_id    uuid,
    visit_id     uuid,
    transfer_id  uuid,
    note         text,
    recorded_by  text,
    effective_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    FOREIGN KEY (tenant_id, from_lot_id) REFERENCES bank_lots (tenant_id, id),
    FOREIGN KEY (tenant_id, to_lot_id) REFERENCES bank_lots (tenant_id, id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
-- Account first, provider second: a balance names the account, and the provider only when asked.
CREATE INDEX bank_postings_to ON bank_postings (tenant_id, to_account, provider_id, effective_at) INCLUDE (minutes);
CREATE INDEX bank_postings_from ON bank_postings (tenant_id, from_account, provider_id, effective_at)
    INCLUDE (minutes);
CREATE INDEX bank_postings_to_lot ON bank_postings (tenant_id, to_lot_id, effective_at) INCLUDE (minutes)
    WHERE to_lot_id IS NOT NULL;
CREATE INDEX bank_postings_from_lot ON bank_postings (tenant_id, from_lot_id, effective_at) INCLUDE (minutes)
    WHERE from_lot_id IS NOT NULL;
CREATE INDEX bank_postings_by_visit ON bank_postings (tenant_id, visit_id) WHERE visit_id IS NOT NULL;
CREATE INDEX bank_postings_listing ON bank_postings (tenant_id, provider_id, id);

-- Transfers between two people of one provider, decided by a commissioner.
CREATE TABLE bank_transfers (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    provider_id    uuid NOT NULL,
    from_person_id uuid NOT NULL,
    to_person_id   uuid NOT NULL CHECK (to_person_id <> from_person_id),
    minutes        integer NOT NULL CHECK (minutes > 0),
    review_ref     text NOT NULL,
    requested_by   text NOT NULL,
    requested_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    FOREIGN KEY (tenant_id, from_person_id) REFERENCES people (tenant_id, id),
    FOREIGN KEY (tenant_id, to_person_id) REFERENCES people (tenant_id, id)
);

-- Holds earmark lots: a bank-funded visit's planned minutes, or a transfer awaiting decision.
CREATE TABLE bank_holds (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    provider_id uuid NOT NULL,
    account     text NOT NULL,
    minutes     integer NOT NULL CHECK (minutes > 0),
    visit_id    uuid,
    transfer_id uuid,
    held_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, visit_id),
    UNIQUE (tenant_id, transfer_id),
    CHECK ((visit_id IS NULL) <> (transfer_id IS NULL)),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id),
    FOREIGN KEY (tenant_id, transfer_id) REFERENCES bank_transfers (tenant_id, id)
);

CREATE INDEX bank_holds_by_account ON bank_holds (tenant_id, account, provider_id, held_at);

CREATE TABLE bank_hold_lots (
    tenant_id uuid NOT NULL,
    hold_id   uuid NOT NULL,
    lot_id    uuid NOT NULL,
    minutes   integer NOT NULL CHECK (minutes > 0),
    PRIMARY KEY (tenant_id, hold_id, lot_id),
    FOREIGN KEY (tenant_id, hold_id) REFERENCES bank_holds (tenant_id, id),
    FOREIGN KEY (tenant_id, lot_id) REFERENCES bank_lots (tenant_id, id)
);
CREATE INDEX bank_hold_lots_by_lot ON bank_hold_lots (tenant_id, lot_id);

-- A hold ends once: posted (what it earmarked moved on) or released. For a transfer, the end
-- is the commissioner's decision.
CREATE TABLE bank_hold_ends (
    tenant_id  uuid NOT NULL,
    hold_id    uuid NOT NULL,
    outcome    text NOT NULL CHECK (outcome IN ('posted', 'released')),
    ended_at   timestamptz NOT NULL,
    decided_by text,
    PRIMARY KEY (tenant_id, hold_id),
    FOREIGN KEY (tenant_id, hold_id) REFERENCES bank_holds (tenant_id, id)
);

-- Minutes a provider delivered that neither the bank nor an invoice paid for: a reduced accrual
-- already spent, or a bank-funded delivery the bank could no longer fund. Billed as a debit line.
CREATE TABLE bank_shortfalls (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    provider_id  uuid NOT NULL,
    contract_id  uuid NOT NULL,
    visit_id     uuid NOT NULL,
    person_id    uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('accrual', 'delivery')),
    minutes      integer NOT NULL CHECK (minutes > 0),
    rate_pence_per_hour integer NOT NULL,
    lot_id       uuid,
    effective_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
CREATE INDEX bank_shortfalls_by_visit ON bank_shortfalls (tenant_id, visit_id);
CREATE INDEX bank_shortfalls_by_contract ON bank_shortfalls (tenant_id, contract_id);

-- Which expiries and shortfalls an invoice has carried (each once).
CREATE TABLE bank_billed (
    tenant_id  uuid NOT NULL,
    item_id    uuid NOT NULL,
    invoice_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, item_id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);

CREATE FUNCTION bank_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only: correct with a reversing posting', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER bank_postings_append_only BEFORE UPDATE OR DELETE ON bank_postings
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
CREATE TRIGGER bank_lots_append_only BEFORE UPDATE OR DELETE ON bank_lots
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
CREATE TRIGGER bank_holds_append_only BEFORE UPDATE OR DELETE ON bank_holds
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
CREATE TRIGGER bank_hold_lots_append_only BEFORE UPDATE OR DELETE ON bank_hold_lots
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
CREATE TRIGGER bank_hold_ends_append_only BEFORE UPDATE OR DELETE ON bank_hold_ends
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
CREATE TRIGGER bank_shortfalls_append_only BEFORE UPDATE OR DELETE ON bank_shortfalls
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
CREATE TRIGGER bank_transfers_append_only BEFORE UPDATE OR DELETE ON bank_transfers
    FOR EACH ROW EXECUTE FUNCTION bank_append_only();
