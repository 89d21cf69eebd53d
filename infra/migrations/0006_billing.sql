-- Billing: invoices and their lines (immutable once issued), gapless numbers, payments, disputes.

CREATE TABLE invoice_counters (
    tenant_id   uuid NOT NULL,
    provider_id uuid NOT NULL,
    year        integer NOT NULL,
    last_number integer NOT NULL,
    PRIMARY KEY (tenant_id, provider_id, year),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id)
);

CREATE TABLE invoices (
    tenant_id           uuid NOT NULL REFERENCES tenants (tenant_id),
    id                  uuid NOT NULL,
    contract_id         uuid NOT NULL,
    provider_id         uuid NOT NULL,
    period_start        date NOT NULL,
    period_end          date NOT NULL,
    number              text NOT NULL,
    currency            char(3) NOT NULL,
    issued_at           timestamptz NOT NULL,
    total_pence         bigint NOT NULL,
    planned_total_pence bigint NOT NULL,
    saving_pence        bigint NOT NULL,
    pending             integer NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, contract_id, period_start),
    UNIQUE (tenant_id, number),
    FOREIGN KEY (tenant_id, contract_id) REFERENCES contracts (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id)
);
CREATE INDEX invoices_by_provider ON invoices (tenant_id, provider_id, id);

CREATE TABLE invoice_lines (
    tenant_id          uuid NOT NULL,
    invoice_id         uuid NOT NULL,
    line_id            uuid NOT NULL,
    position           integer NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('visit', 'adjustment', 'expired_bank_credit', 'bank_shortfall')),
    adjusts_line_id    uuid,
    visit_id           uuid,
    place              integer,
    person_reference   text,
    carer_id           uuid,
    date               date,
    band               text,
    planned_min        integer,
    check_in           timestamptz,
    check_out          timestamptz,
    payable_min        integer NOT NULL,
    rate_pence_per_hour integer NOT NULL,
    amount_pence       bigint NOT NULL,
    funding            text,
    exceptions         text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, line_id),
    UNIQUE (tenant_id, invoice_id, position),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id),
    FOREIGN KEY (tenant_id, adjusts_line_id) REFERENCES invoice_lines (tenant_id, line_id),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
CREATE INDEX invoice_lines_by_visit ON invoice_lines (tenant_id, visit_id, place);

-- Issued invoices and their lines never change: later changes arrive as adjustment lines.
CREATE FUNCTION invoices_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'issued invoices and their lines cannot be changed or deleted'
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();

CREATE TABLE payments (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    invoice_id   uuid NOT NULL,
    paid_on      date NOT NULL,
    amount_pence bigint NOT NULL CHECK (amount_pence > 0),
    reference    text NOT NULL,
    recorded_by  text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id)
);
CREATE INDEX payments_by_invoice ON payments (tenant_id, invoice_id);

CREATE TABLE disputes (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL,
    invoice_id uuid NOT NULL,
    line_id    uuid NOT NULL,
    note       text NOT NULL,
    raised_by  text NOT NULL,
    raised_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoices (tenant_id, id),
    FOREIGN KEY (tenant_id, line_id) REFERENCES invoice_lines (tenant_id, line_id)
);
CREATE INDEX disputes_by_invoice ON disputes (tenant_id, invoice_id);

-- Payments and disputes are append-only records.
CREATE TRIGGER payments_append_only BEFORE UPDATE OR DELETE ON payments
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
CREATE TRIGGER disputes_append_only BEFORE UPDATE OR DELETE ON disputes
    FOR EACH ROW EXECUTE FUNCTION invoices_immutable();
