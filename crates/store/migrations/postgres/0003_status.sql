-- The public status page's durable state: every component status change (the
-- source of the 90-day uptime bars), incidents with their timestamped updates,
-- operator overrides of component statuses, and scheduled maintenances.
-- Times are Unix milliseconds; statuses are the Statuspage v2 wire names.

CREATE TABLE status_changes (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    component_id TEXT NOT NULL,
    status       TEXT NOT NULL,
    at           BIGINT NOT NULL
);
CREATE INDEX status_changes_by_time ON status_changes(at);
CREATE INDEX status_changes_by_component ON status_changes(component_id, at);

-- component_ids: space-separated component ids. auto_key: what opened an
-- automatic incident (e.g. `component:api`, `registration`, `under_attack`);
-- NULL for incidents the operator opened. At most one unresolved incident per
-- auto_key, so two gateway nodes cannot both open one for the same cause.
CREATE TABLE incidents (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    impact        TEXT NOT NULL,
    component_ids TEXT NOT NULL,
    auto_key      TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    monitoring_at BIGINT,
    resolved_at   BIGINT
);
CREATE INDEX incidents_by_time ON incidents(created_at);
CREATE UNIQUE INDEX incidents_one_open_per_cause ON incidents(auto_key)
    WHERE auto_key IS NOT NULL AND resolved_at IS NULL;

CREATE TABLE incident_updates (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id BIGINT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX incident_updates_by_incident ON incident_updates(incident_id, id);

-- An operator's forced status for a component, until cleared.
CREATE TABLE component_overrides (
    component_id TEXT PRIMARY KEY NOT NULL,
    status       TEXT NOT NULL,
    set_at       BIGINT NOT NULL
);

-- Planned work; its status (scheduled, in progress, completed) follows from the
-- window and the clock.
CREATE TABLE scheduled_maintenances (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT NOT NULL,
    body            TEXT NOT NULL,
    component_ids   TEXT NOT NULL,
    scheduled_for   BIGINT NOT NULL,
    scheduled_until BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX scheduled_maintenances_by_window ON scheduled_maintenances(scheduled_until);
