//! The status page's durable state: component status changes (the 90-day uptime
//! bars), incidents and their updates, operator overrides of component statuses,
//! and scheduled maintenances.
//!
//! Statuses, impacts and component ids are stored as the Statuspage v2 wire
//! names the caller passes; the store checks none of them except that an
//! incident update whose status is `resolved` or `postmortem` closes the
//! incident and `monitoring` marks when monitoring began. Every read is
//! bounded by a time window and a row limit. Times are Unix milliseconds.

use sqlx::FromRow;

use crate::pool::{Store, StoreError, conflict, on_pool};

/// A component entered `status` at `at`.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct StatusChangeRow {
    pub component_id: String,
    pub status: String,
    pub at: i64,
}

/// An incident to open, with its first update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIncident {
    pub name: String,
    /// Status of the incident and of its first update, e.g. `investigating`.
    pub status: String,
    /// `none`, `minor`, `major` or `critical`.
    pub impact: String,
    /// The first update's text.
    pub body: String,
    /// Ids of the affected components; ids must not contain whitespace.
    pub component_ids: Vec<String>,
    /// What opened an automatic incident (`component:api`, `registration`, ...);
    /// `None` when the operator opened it. At most one unresolved incident per key.
    pub auto_key: Option<String>,
}

/// An update to post on an incident, optionally editing it at the same time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentChange {
    /// The incident's new status, also the update's.
    pub status: String,
    pub body: String,
    pub name: Option<String>,
    pub impact: Option<String>,
    pub component_ids: Option<Vec<String>>,
}

/// A stored incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRow {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub impact: String,
    pub component_ids: Vec<String>,
    pub auto_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub monitoring_at: Option<i64>,
    pub resolved_at: Option<i64>,
}

/// One update on an incident.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct IncidentUpdateRow {
    pub id: i64,
    pub incident_id: i64,
    pub status: String,
    pub body: String,
    pub at: i64,
}

/// An incident with its updates, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRecord {
    pub incident: IncidentRow,
    pub updates: Vec<IncidentUpdateRow>,
}

/// Planned work to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMaintenance {
    pub name: String,
    pub body: String,
    pub component_ids: Vec<String>,
    pub scheduled_for: i64,
    pub scheduled_until: i64,
}

/// A stored maintenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceRow {
    pub id: i64,
    pub name: String,
    pub body: String,
    pub component_ids: Vec<String>,
    pub scheduled_for: i64,
    pub scheduled_until: i64,
    pub created_at: i64,
}

#[derive(FromRow)]
struct IncidentRaw {
    id: i64,
    name: String,
    status: String,
    impact: String,
    component_ids: String,
    auto_key: Option<String>,
    created_at: i64,
    updated_at: i64,
    monitoring_at: Option<i64>,
    resolved_at: Option<i64>,
}

impl From<IncidentRaw> for IncidentRow {
    fn from(r: IncidentRaw) -> Self {
        IncidentRow {
            id: r.id,
            name: r.name,
            status: r.status,
            impact: r.impact,
            component_ids: split_ids(&r.component_ids),
            auto_key: r.auto_key,
            created_at: r.created_at,
            updated_at: r.updated_at,
            monitoring_at: r.monitoring_at,
            resolved_at: r.resolved_at,
        }
    }
}

#[derive(FromRow)]
struct MaintenanceRaw {
    id: i64,
    name: String,
    body: String,
    component_ids: String,
    scheduled_for: i64,
    scheduled_until: i64,
    created_at: i64,
}

impl From<MaintenanceRaw> for MaintenanceRow {
    fn from(r: MaintenanceRaw) -> Self {
        MaintenanceRow {
            id: r.id,
            name: r.name,
            body: r.body,
            component_ids: split_ids(&r.component_ids),
            scheduled_for: r.scheduled_for,
            scheduled_until: r.scheduled_until,
            created_at: r.created_at,
        }
    }
}

fn join_ids(ids: &[String]) -> String {
    ids.join(" ")
}

fn split_ids(ids: &str) -> Vec<String> {
    ids.split_whitespace().map(str::to_owned).collect()
}

/// `SELECT <incident columns> FROM incidents <tail>`, as a literal.
macro_rules! select_incidents {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, status, impact, component_ids, auto_key, created_at, updated_at, monitoring_at, ",
            "resolved_at FROM incidents ",
            $tail
        )
    };
}

/// Sets the incident's status and the times it implies; `$1` id, `$2` status, `$3` at.
const SET_INCIDENT_STATUS: &str = "UPDATE incidents SET status = $2, updated_at = $3, \
     monitoring_at = CASE WHEN $2 = 'monitoring' THEN COALESCE(monitoring_at, $3) ELSE monitoring_at END, \
     resolved_at = CASE WHEN $2 IN ('resolved', 'postmortem') THEN COALESCE(resolved_at, $3) ELSE NULL END \
     WHERE id = $1";

const INSERT_UPDATE: &str = "INSERT INTO incident_updates (incident_id, status, body, at) VALUES ($1, $2, $3, $4)";

impl Store {
    /// Record that `component_id` entered `status` at `at`.
    pub async fn record_status_change(&self, component_id: &str, status: &str, at: i64) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO status_changes (component_id, status, at) VALUES ($1, $2, $3)";
        on_pool!(self, pool => {
            sqlx::query(SQL).bind(component_id).bind(status).bind(at).execute(pool).await?;
        });
        Ok(())
    }

    /// Each component's last recorded change before `before` (of changes at the
    /// same instant, the one recorded last), ordered by time.
    pub async fn last_status_changes(&self, before: i64) -> Result<Vec<StatusChangeRow>, StoreError> {
        const SQL: &str = "SELECT component_id, status, at FROM status_changes WHERE id IN \
                           (SELECT MAX(id) FROM status_changes WHERE at < $1 GROUP BY component_id) \
                           ORDER BY at, id";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).bind(before).fetch_all(pool).await?))
    }

    /// The status log from `since` on, oldest first: for each component the last
    /// change before `since` (the status it carried into the window), then every
    /// change at or after `since`, of which at most `limit` (the newest) are kept.
    pub async fn status_changes_since(&self, since: i64, limit: i64) -> Result<Vec<StatusChangeRow>, StoreError> {
        const SQL: &str = "SELECT component_id, status, at FROM status_changes WHERE at >= $1 \
                           ORDER BY at DESC, id DESC LIMIT $2";
        let mut changes = self.last_status_changes(since).await?;
        let mut window: Vec<StatusChangeRow> =
            on_pool!(self, pool => sqlx::query_as(SQL).bind(since).bind(limit).fetch_all(pool).await?);
        window.reverse();
        changes.append(&mut window);
        Ok(changes)
    }

    /// Open an incident with its first update. A second unresolved incident for
    /// the same `auto_key` is refused with [`StoreError::Conflict`].
    pub async fn open_incident(&self, incident: &NewIncident, at: i64) -> Result<i64, StoreError> {
        const SQL: &str = "INSERT INTO incidents (name, status, impact, component_ids, auto_key, created_at, \
                           updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id";
        let ids = join_ids(&incident.component_ids);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(SQL)
                .bind(&incident.name)
                .bind(&incident.status)
                .bind(&incident.impact)
                .bind(&ids)
                .bind(&incident.auto_key)
                .bind(at)
                .fetch_one(&mut *tx)
                .await
                .map_err(conflict("an unresolved incident for this cause"))?;
            // Sets monitoring_at / resolved_at when the incident opens in those states.
            sqlx::query(SET_INCIDENT_STATUS).bind(id).bind(&incident.status).bind(at).execute(&mut *tx).await?;
            sqlx::query(INSERT_UPDATE).bind(id).bind(&incident.status).bind(&incident.body).bind(at)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Post an update on incident `id`, setting its status (and any edited
    /// field). `false` when there is no such incident.
    pub async fn update_incident(&self, id: i64, change: &IncidentChange, at: i64) -> Result<bool, StoreError> {
        const EDIT: &str = "UPDATE incidents SET name = COALESCE($2, name), impact = COALESCE($3, impact), \
                            component_ids = COALESCE($4, component_ids) WHERE id = $1";
        let ids = change.component_ids.as_deref().map(join_ids);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(SET_INCIDENT_STATUS)
                .bind(id)
                .bind(&change.status)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(conflict("an unresolved incident for this cause"))?
                .rows_affected()
                > 0;
            if !found {
                return Ok(false);
            }
            sqlx::query(EDIT).bind(id).bind(&change.name).bind(&change.impact).bind(&ids).execute(&mut *tx).await?;
            sqlx::query(INSERT_UPDATE).bind(id).bind(&change.status).bind(&change.body).bind(at)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// One incident with every update, oldest first.
    pub async fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        const UPDATES: &str =
            "SELECT id, incident_id, status, body, at FROM incident_updates WHERE incident_id = $1 ORDER BY id";
        let row: Option<IncidentRaw> = on_pool!(self, pool =>
            sqlx::query_as(select_incidents!("WHERE id = $1")).bind(id).fetch_optional(pool).await?);
        let Some(row) = row else { return Ok(None) };
        let updates = on_pool!(self, pool => sqlx::query_as(UPDATES).bind(id).fetch_all(pool).await?);
        Ok(Some(IncidentRecord { incident: row.into(), updates }))
    }

    /// The unresolved incident opened for `auto_key`, if any.
    pub async fn open_incident_for(&self, auto_key: &str) -> Result<Option<IncidentRow>, StoreError> {
        let row: Option<IncidentRaw> = on_pool!(self, pool =>
            sqlx::query_as(select_incidents!("WHERE auto_key = $1 AND resolved_at IS NULL"))
                .bind(auto_key).fetch_optional(pool).await?);
        Ok(row.map(Into::into))
    }

    /// Every unresolved incident and those created at or after `since`, newest
    /// first, at most `limit` (unresolved ones first), each with at most
    /// `max_updates` of its updates (the newest), oldest first.
    pub async fn incidents_since(
        &self,
        since: i64,
        limit: i64,
        max_updates: i64,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        const INCIDENTS: &str = select_incidents!(
            "WHERE resolved_at IS NULL OR created_at >= $1 \
             ORDER BY CASE WHEN resolved_at IS NULL THEN 0 ELSE 1 END, created_at DESC, id DESC LIMIT $2"
        );
        // Numbered per incident from the newest, so each keeps its latest updates.
        const UPDATES: &str = "SELECT id, incident_id, status, body, at FROM \
             (SELECT id, incident_id, status, body, at, \
              ROW_NUMBER() OVER (PARTITION BY incident_id ORDER BY id DESC) AS n FROM incident_updates \
              WHERE incident_id IN (SELECT id FROM incidents WHERE resolved_at IS NULL OR created_at >= $1)) u \
             WHERE n <= $2 ORDER BY incident_id, id";
        let rows: Vec<IncidentRaw> =
            on_pool!(self, pool => sqlx::query_as(INCIDENTS).bind(since).bind(limit).fetch_all(pool).await?);
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let updates: Vec<IncidentUpdateRow> =
            on_pool!(self, pool => sqlx::query_as(UPDATES).bind(since).bind(max_updates).fetch_all(pool).await?);
        let mut records: Vec<IncidentRecord> =
            rows.into_iter().map(|r| IncidentRecord { incident: r.into(), updates: Vec::new() }).collect();
        let index: std::collections::HashMap<i64, usize> =
            records.iter().enumerate().map(|(i, r)| (r.incident.id, i)).collect();
        for update in updates {
            if let Some(&i) = index.get(&update.incident_id) {
                records[i].updates.push(update);
            }
        }
        Ok(records)
    }

    /// Force `component_id` to `status` until cleared (`None`).
    pub async fn set_component_override(
        &self,
        component_id: &str,
        status: Option<&str>,
        at: i64,
    ) -> Result<(), StoreError> {
        const SET: &str = "INSERT INTO component_overrides (component_id, status, set_at) VALUES ($1, $2, $3) \
                           ON CONFLICT (component_id) DO UPDATE SET status = excluded.status, set_at = excluded.set_at";
        const CLEAR: &str = "DELETE FROM component_overrides WHERE component_id = $1";
        match status {
            Some(status) => on_pool!(self, pool => {
                sqlx::query(SET).bind(component_id).bind(status).bind(at).execute(pool).await?;
            }),
            None => on_pool!(self, pool => {
                sqlx::query(CLEAR).bind(component_id).execute(pool).await?;
            }),
        }
        Ok(())
    }

    /// Every override in force: `(component id, status)`, by component id.
    pub async fn component_overrides(&self) -> Result<Vec<(String, String)>, StoreError> {
        const SQL: &str = "SELECT component_id, status FROM component_overrides ORDER BY component_id LIMIT 1000";
        Ok(on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?))
    }

    /// Announce planned work.
    pub async fn create_maintenance(&self, m: &NewMaintenance, at: i64) -> Result<i64, StoreError> {
        const SQL: &str = "INSERT INTO scheduled_maintenances (name, body, component_ids, scheduled_for, \
                           scheduled_until, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        Ok(on_pool!(self, pool => sqlx::query_scalar(SQL)
            .bind(&m.name).bind(&m.body).bind(join_ids(&m.component_ids))
            .bind(m.scheduled_for).bind(m.scheduled_until).bind(at)
            .fetch_one(pool).await?))
    }

    /// Maintenances whose window ends at or after `since`, latest start first, at most `limit`.
    pub async fn maintenances_since(&self, since: i64, limit: i64) -> Result<Vec<MaintenanceRow>, StoreError> {
        const SQL: &str = "SELECT id, name, body, component_ids, scheduled_for, scheduled_until, created_at \
                           FROM scheduled_maintenances WHERE scheduled_until >= $1 \
                           ORDER BY scheduled_for DESC, id DESC LIMIT $2";
        let rows: Vec<MaintenanceRaw> =
            on_pool!(self, pool => sqlx::query_as(SQL).bind(since).bind(limit).fetch_all(pool).await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
