-- Indexes for the monitoring worker, which keeps alert timers in Redis and reads PostgreSQL only
-- for what changed: visits changed since its last look (new, moved, cancelled), visits entering
-- its scheduling horizon or still able to raise an alert, and GPS events that failed the
-- geofence (few, so the partial index costs ingest almost nothing).

CREATE INDEX visits_by_update ON visits (updated_at);
CREATE INDEX visits_alertable ON visits (planned_start) WHERE status IN ('planned', 'in_progress', 'missed');
CREATE INDEX visit_events_unverified_gps ON visit_events (received_at) WHERE method = 'gps' AND NOT verified;
