-- Alerts: late, missed, no check-out, outside the geofence. One row per (visit, kind, subject):
-- two workers raising the same alert insert one row.

CREATE TABLE alerts (
    tenant_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    id              uuid NOT NULL,
    visit_id        uuid NOT NULL,
    person_id       uuid NOT NULL,
    provider_id     uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('late', 'missed', 'no_check_out', 'outside_geofence')),
    -- '' for an alert about the visit; the event id for outside_geofence (one per event).
    subject         text NOT NULL DEFAULT '',
    due_at          timestamptz NOT NULL,
    raised_at       timestamptz NOT NULL,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, visit_id, kind, subject),
    FOREIGN KEY (tenant_id, visit_id) REFERENCES visits (tenant_id, id)
);
CREATE INDEX alerts_open ON alerts (tenant_id, provider_id, raised_at) WHERE resolved_at IS NULL;
