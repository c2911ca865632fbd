//! The Atlassian Statuspage v2 public JSON API, field for field.
//!
//! Status aggregators and client libraries already poll `/api/v2/*.json`; writing the same
//! field names, JSON types (nulls included), key order and enum values lets them read this
//! page unchanged. The shape is checked against recorded responses in
//! `tests/fixtures/` (see the README there for where each comes from).
//!
//! Fields Palisade has no use for are written the way an ordinary Statuspage page writes
//! them: `custom_tweet` and `tweet_id` are always `null`.
//!
//! Ordering: components by `position` (ties keep the caller's order); incidents newest
//! first by `created_at`; scheduled maintenance latest first by `scheduled_for`; updates
//! within each newest first by `display_at`. `incidents.json` and
//! `scheduled-maintenances.json` list at most [`LIST_LIMIT`] entries, as Statuspage does.

use std::collections::HashMap;

use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::model::{
    AffectedComponent, Component, ComponentStatus, Impact, Incident, MaintenanceStatus, Progress, ScheduledMaintenance,
    Snapshot, Update,
};
use crate::overall::{OverallStatus, overall_status};
use crate::timestamp;

/// How many entries the "all" lists (`incidents.json`, `scheduled-maintenances.json`) hold.
pub const LIST_LIMIT: usize = 50;

/// One document of the v2 API. [`Endpoint::path`] is relative to `/api/v2/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Page, components, unresolved incidents, upcoming and active maintenance, status.
    Summary,
    /// Page and the overall status indicator.
    Status,
    /// Page and every component.
    Components,
    /// The [`LIST_LIMIT`] most recent incidents, resolved or not.
    Incidents,
    /// Incidents that are investigating, identified or monitoring.
    UnresolvedIncidents,
    /// The [`LIST_LIMIT`] most recent scheduled maintenances.
    ScheduledMaintenances,
    /// Maintenances still in the `scheduled` state.
    UpcomingMaintenances,
    /// Maintenances in progress or verifying.
    ActiveMaintenances,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Self; 8] = [
        Self::Summary,
        Self::Status,
        Self::Components,
        Self::Incidents,
        Self::UnresolvedIncidents,
        Self::ScheduledMaintenances,
        Self::UpcomingMaintenances,
        Self::ActiveMaintenances,
    ];

    /// The path under `/api/v2/`, e.g. `incidents/unresolved.json`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Summary => "summary.json",
            Self::Status => "status.json",
            Self::Components => "components.json",
            Self::Incidents => "incidents.json",
            Self::UnresolvedIncidents => "incidents/unresolved.json",
            Self::ScheduledMaintenances => "scheduled-maintenances.json",
            Self::UpcomingMaintenances => "scheduled-maintenances/upcoming.json",
            Self::ActiveMaintenances => "scheduled-maintenances/active.json",
        }
    }

    /// The endpoint for a path under `/api/v2/` (as [`Endpoint::path`] spells it).
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }
}

/// The JSON document `endpoint` serves for `snapshot`.
pub fn render_json(snapshot: &Snapshot, endpoint: Endpoint) -> String {
    let w = Writer::new(snapshot);
    let page = w.page();
    let json = match endpoint {
        Endpoint::Summary => serde_json::to_string(&SummaryDoc {
            page,
            components: w.components(),
            incidents: w.incidents(|i| i.status.is_unresolved(), usize::MAX),
            // "Any upcoming or in-progress scheduled maintenances": all but completed ones.
            scheduled_maintenances: w
                .maintenances(|m| m.status.is_active() || m.status == MaintenanceStatus::Scheduled, usize::MAX),
            status: overall_status(snapshot),
        }),
        Endpoint::Status => serde_json::to_string(&StatusDoc { page, status: overall_status(snapshot) }),
        Endpoint::Components => serde_json::to_string(&ComponentsDoc { page, components: w.components() }),
        Endpoint::Incidents => {
            serde_json::to_string(&IncidentsDoc { page, incidents: w.incidents(|_| true, LIST_LIMIT) })
        }
        Endpoint::UnresolvedIncidents => serde_json::to_string(&IncidentsDoc {
            page,
            incidents: w.incidents(|i| i.status.is_unresolved(), usize::MAX),
        }),
        Endpoint::ScheduledMaintenances => serde_json::to_string(&MaintenancesDoc {
            page,
            scheduled_maintenances: w.maintenances(|_| true, LIST_LIMIT),
        }),
        Endpoint::UpcomingMaintenances => serde_json::to_string(&MaintenancesDoc {
            page,
            scheduled_maintenances: w.maintenances(|m| m.status == MaintenanceStatus::Scheduled, usize::MAX),
        }),
        Endpoint::ActiveMaintenances => serde_json::to_string(&MaintenancesDoc {
            page,
            scheduled_maintenances: w.maintenances(|m| m.status.is_active(), usize::MAX),
        }),
    };
    // These documents hold only strings, numbers, booleans, nulls, arrays and structs, which
    // serde_json always encodes; it fails only for maps with non-string keys or a failing
    // writer, neither of which occurs here.
    json.expect("v2 documents always serialise")
}

/// Builds wire structs borrowing from the snapshot.
struct Writer<'a> {
    snapshot: &'a Snapshot,
    /// Components in display order.
    ordered: Vec<&'a Component>,
    /// Group id → child ids in display order.
    children: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Writer<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        let mut ordered: Vec<&Component> = snapshot.components.iter().collect();
        ordered.sort_by_key(|c| c.position); // stable: ties keep the caller's order
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for c in &ordered {
            if let Some(g) = &c.group_id {
                children.entry(g.as_str()).or_default().push(&c.id);
            }
        }
        Self { snapshot, ordered, children }
    }

    fn page(&self) -> WirePage<'a> {
        let p = &self.snapshot.page;
        WirePage { id: &p.id, name: &p.name, url: &p.url, time_zone: &p.time_zone, updated_at: Ts(p.updated_at) }
    }

    fn component(&self, c: &'a Component) -> WireComponent<'a> {
        WireComponent {
            id: &c.id,
            name: &c.name,
            status: c.status,
            created_at: Ts(c.created_at),
            updated_at: Ts(c.updated_at),
            position: c.position,
            description: c.description.as_deref(),
            showcase: c.showcase,
            start_date: c.start_date.map(Day),
            group_id: c.group_id.as_deref(),
            page_id: &self.snapshot.page.id,
            group: c.group,
            only_show_if_degraded: c.only_show_if_degraded,
            // Statuspage writes the child list on groups only; other components lack the key.
            components: c.group.then(|| self.children.get(c.id.as_str()).cloned().unwrap_or_default()),
        }
    }

    fn components(&self) -> Vec<WireComponent<'a>> {
        self.ordered.iter().map(|c| self.component(c)).collect()
    }

    fn affected(&self, ids: &'a [String]) -> Vec<WireComponent<'a>> {
        ids.iter().filter_map(|id| self.snapshot.component(id)).map(|c| self.component(c)).collect()
    }

    fn incidents(&self, keep: impl Fn(&Incident) -> bool, limit: usize) -> Vec<WireIncident<'a>> {
        let mut list: Vec<&Incident> = self.snapshot.incidents.iter().filter(|i| keep(i)).collect();
        list.sort_by_key(|i| std::cmp::Reverse(i.created_at));
        list.truncate(limit);
        list.into_iter()
            .map(|i| WireIncident {
                id: &i.id,
                name: &i.name,
                status: i.status.as_str(),
                created_at: Ts(i.created_at),
                updated_at: Ts(i.updated_at),
                monitoring_at: i.monitoring_at.map(Ts),
                resolved_at: i.resolved_at.map(Ts),
                impact: i.impact,
                shortlink: &i.shortlink,
                started_at: Ts(i.started_at),
                page_id: &self.snapshot.page.id,
                incident_updates: updates(&i.id, &i.incident_updates),
                components: self.affected(&i.component_ids),
                scheduled_for: None,
                scheduled_until: None,
            })
            .collect()
    }

    fn maintenances(&self, keep: impl Fn(&ScheduledMaintenance) -> bool, limit: usize) -> Vec<WireIncident<'a>> {
        let mut list: Vec<&ScheduledMaintenance> =
            self.snapshot.scheduled_maintenances.iter().filter(|m| keep(m)).collect();
        list.sort_by_key(|m| std::cmp::Reverse(m.scheduled_for));
        list.truncate(limit);
        list.into_iter()
            .map(|m| WireIncident {
                id: &m.id,
                name: &m.name,
                status: m.status.as_str(),
                created_at: Ts(m.created_at),
                updated_at: Ts(m.updated_at),
                monitoring_at: m.monitoring_at.map(Ts),
                resolved_at: m.resolved_at.map(Ts),
                impact: m.impact,
                shortlink: &m.shortlink,
                started_at: Ts(m.started_at),
                page_id: &self.snapshot.page.id,
                incident_updates: updates(&m.id, &m.incident_updates),
                components: self.affected(&m.component_ids),
                scheduled_for: Some(Ts(m.scheduled_for)),
                scheduled_until: Some(Ts(m.scheduled_until)),
            })
            .collect()
    }
}

fn updates<'a, S: Progress>(incident_id: &'a str, list: &'a [Update<S>]) -> Vec<WireUpdate<'a>> {
    let mut sorted: Vec<&Update<S>> = list.iter().collect();
    sorted.sort_by_key(|u| std::cmp::Reverse(u.display_at));
    sorted
        .into_iter()
        .map(|u| WireUpdate {
            id: &u.id,
            status: u.status.as_str(),
            body: &u.body,
            incident_id,
            created_at: Ts(u.created_at),
            updated_at: Ts(u.updated_at),
            display_at: Ts(u.display_at),
            affected_components: u
                .affected_components
                .as_deref()
                .map(|list| list.iter().map(WireAffected::from).collect()),
            deliver_notifications: u.deliver_notifications,
            custom_tweet: None,
            tweet_id: None,
        })
        .collect()
}

/// A timestamp as Statuspage writes it.
struct Ts(OffsetDateTime);

impl Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&timestamp::api(self.0))
    }
}

/// A calendar day, `2024-05-01`, as in `start_date`.
struct Day(Date);

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

// The wire structs: field order is the order Statuspage writes.

#[derive(Serialize)]
struct WirePage<'a> {
    id: &'a str,
    name: &'a str,
    url: &'a str,
    time_zone: &'a str,
    updated_at: Ts,
}

#[derive(Serialize)]
struct WireComponent<'a> {
    id: &'a str,
    name: &'a str,
    status: ComponentStatus,
    created_at: Ts,
    updated_at: Ts,
    position: u32,
    description: Option<&'a str>,
    showcase: bool,
    start_date: Option<Day>,
    group_id: Option<&'a str>,
    page_id: &'a str,
    group: bool,
    only_show_if_degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<Vec<&'a str>>,
}

/// An incident, or a scheduled maintenance when the two `scheduled_*` fields are set.
#[derive(Serialize)]
struct WireIncident<'a> {
    id: &'a str,
    name: &'a str,
    status: &'static str,
    created_at: Ts,
    updated_at: Ts,
    monitoring_at: Option<Ts>,
    resolved_at: Option<Ts>,
    impact: Impact,
    shortlink: &'a str,
    started_at: Ts,
    page_id: &'a str,
    incident_updates: Vec<WireUpdate<'a>>,
    components: Vec<WireComponent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_for: Option<Ts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_until: Option<Ts>,
}

#[derive(Serialize)]
struct WireUpdate<'a> {
    id: &'a str,
    status: &'static str,
    body: &'a str,
    incident_id: &'a str,
    created_at: Ts,
    updated_at: Ts,
    display_at: Ts,
    affected_components: Option<Vec<WireAffected<'a>>>,
    deliver_notifications: bool,
    custom_tweet: Option<&'a str>,
    tweet_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireAffected<'a> {
    code: &'a str,
    name: &'a str,
    old_status: ComponentStatus,
    new_status: ComponentStatus,
}

impl<'a> From<&'a AffectedComponent> for WireAffected<'a> {
    fn from(a: &'a AffectedComponent) -> Self {
        Self { code: &a.code, name: &a.name, old_status: a.old_status, new_status: a.new_status }
    }
}

#[derive(Serialize)]
struct SummaryDoc<'a> {
    page: WirePage<'a>,
    components: Vec<WireComponent<'a>>,
    incidents: Vec<WireIncident<'a>>,
    scheduled_maintenances: Vec<WireIncident<'a>>,
    status: OverallStatus,
}

#[derive(Serialize)]
struct StatusDoc<'a> {
    page: WirePage<'a>,
    status: OverallStatus,
}

#[derive(Serialize)]
struct ComponentsDoc<'a> {
    page: WirePage<'a>,
    components: Vec<WireComponent<'a>>,
}

#[derive(Serialize)]
struct IncidentsDoc<'a> {
    page: WirePage<'a>,
    incidents: Vec<WireIncident<'a>>,
}

#[derive(Serialize)]
struct MaintenancesDoc<'a> {
    page: WirePage<'a>,
    scheduled_maintenances: Vec<WireIncident<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IncidentStatus, MaintenanceStatus};
    use crate::testutil::{component, incident, maintenance, snapshot, update};
    use serde_json::{Value, json};
    use time::macros::datetime;

    fn doc(snap: &Snapshot, e: Endpoint) -> Value {
        serde_json::from_str(&render_json(snap, e)).expect("valid JSON")
    }

    #[test]
    fn paths_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(e.path()), Some(e));
        }
        assert_eq!(Endpoint::from_path("/summary.json"), None);
        assert_eq!(Endpoint::from_path("incidents/unknown.json"), None);
    }

    #[test]
    fn every_document_starts_with_the_page() {
        let snap = snapshot();
        for e in Endpoint::ALL {
            let d = doc(&snap, e);
            assert_eq!(
                d["page"],
                json!({
                    "id": "pg1",
                    "name": "Example",
                    "url": "https://status.example.com",
                    "time_zone": "Etc/UTC",
                    "updated_at": "2024-05-10T11:00:00.000Z"
                }),
                "{}",
                e.path()
            );
        }
    }

    #[test]
    fn components_are_ordered_and_groups_list_their_children() {
        let mut snap = snapshot();
        let mut g = component("g", ComponentStatus::Operational);
        g.group = true;
        g.position = 1;
        let mut a = component("a", ComponentStatus::Operational);
        a.group_id = Some("g".into());
        a.position = 3;
        let mut b = component("b", ComponentStatus::PartialOutage);
        b.group_id = Some("g".into());
        b.position = 2;
        b.start_date = Some(datetime!(2024-02-03 0:00 UTC).date());
        b.description = Some("Bee".into());
        snap.components = vec![a, g, b];
        let d = doc(&snap, Endpoint::Components);
        let list = d["components"].as_array().unwrap();
        let ids: Vec<_> = list.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["g", "b", "a"]);
        assert_eq!(list[0]["components"], json!(["b", "a"]));
        assert!(list[1].get("components").is_none(), "only groups carry the key");
        assert_eq!(list[1]["start_date"], "2024-02-03");
        assert_eq!(list[1]["description"], "Bee");
        assert_eq!(list[1]["status"], "partial_outage");
        assert_eq!(list[2]["start_date"], Value::Null);
        assert_eq!(list[2]["description"], Value::Null);
        assert_eq!(list[2]["page_id"], "pg1");
    }

    #[test]
    fn incident_lists_filter_sort_and_cap() {
        let mut snap = snapshot();
        snap.incidents = (0..LIST_LIMIT + 10)
            .map(|n| {
                let status = if n % 10 == 0 { IncidentStatus::Monitoring } else { IncidentStatus::Resolved };
                let mut i = incident(&format!("i{n}"), "x", status, Impact::Minor);
                i.created_at = datetime!(2024-01-01 0:00 UTC) + time::Duration::hours(n as i64);
                i
            })
            .collect();
        let all = doc(&snap, Endpoint::Incidents);
        let all = all["incidents"].as_array().unwrap();
        assert_eq!(all.len(), LIST_LIMIT);
        assert_eq!(all[0]["id"], format!("i{}", LIST_LIMIT + 9));

        let open = doc(&snap, Endpoint::UnresolvedIncidents);
        let ids: Vec<_> = open["incidents"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["i50", "i40", "i30", "i20", "i10", "i0"]);
        assert_eq!(doc(&snap, Endpoint::Summary)["incidents"], open["incidents"]);
    }

    #[test]
    fn incident_fields_updates_and_components() {
        let mut snap = snapshot();
        snap.components = vec![component("c1", ComponentStatus::MajorOutage)];
        let mut i = incident("i1", "Chat down", IncidentStatus::Monitoring, Impact::Critical);
        i.monitoring_at = Some(datetime!(2024-05-10 10:00 UTC));
        i.component_ids = vec!["c1".into(), "gone".into()];
        let mut first = update("u1", IncidentStatus::Investigating, "Looking", datetime!(2024-05-10 9:00 UTC));
        first.affected_components = Some(vec![AffectedComponent {
            code: "c1".into(),
            name: "Component c1".into(),
            old_status: ComponentStatus::Operational,
            new_status: ComponentStatus::MajorOutage,
        }]);
        let second = update("u2", IncidentStatus::Monitoring, "Fixed", datetime!(2024-05-10 10:00 UTC));
        i.incident_updates = vec![first, second];
        snap.incidents = vec![i];

        let d = doc(&snap, Endpoint::UnresolvedIncidents);
        let i = &d["incidents"][0];
        assert_eq!(i["status"], "monitoring");
        assert_eq!(i["impact"], "critical");
        assert_eq!(i["monitoring_at"], "2024-05-10T10:00:00.000Z");
        assert_eq!(i["resolved_at"], Value::Null);
        assert!(i.get("scheduled_for").is_none());
        // Newest update first; unknown component ids are skipped.
        assert_eq!(i["incident_updates"][0]["id"], "u2");
        assert_eq!(i["incident_updates"][0]["affected_components"], Value::Null);
        assert_eq!(i["incident_updates"][0]["tweet_id"], Value::Null);
        assert_eq!(i["incident_updates"][1]["incident_id"], "i1");
        assert_eq!(
            i["incident_updates"][1]["affected_components"],
            json!([{"code": "c1", "name": "Component c1", "old_status": "operational", "new_status": "major_outage"}])
        );
        assert_eq!(i["components"].as_array().unwrap().len(), 1);
        assert_eq!(i["components"][0]["id"], "c1");

        let s = doc(&snap, Endpoint::Status);
        assert_eq!(s["status"], json!({"indicator": "critical", "description": "Major System Outage"}));
    }

    #[test]
    fn maintenance_lists_by_status() {
        let mut snap = snapshot();
        snap.scheduled_maintenances = vec![
            maintenance("scheduled", MaintenanceStatus::Scheduled),
            maintenance("in_progress", MaintenanceStatus::InProgress),
            maintenance("verifying", MaintenanceStatus::Verifying),
            maintenance("completed", MaintenanceStatus::Completed),
        ];
        let ids = |e| {
            let d = doc(&snap, e);
            d["scheduled_maintenances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(Endpoint::ScheduledMaintenances).len(), 4);
        assert_eq!(ids(Endpoint::UpcomingMaintenances), ["scheduled"]);
        assert_eq!(ids(Endpoint::ActiveMaintenances), ["in_progress", "verifying"]);
        assert_eq!(ids(Endpoint::Summary), ["scheduled", "in_progress", "verifying"]);
        let d = doc(&snap, Endpoint::UpcomingMaintenances);
        let m = &d["scheduled_maintenances"][0];
        assert_eq!(m["impact"], "maintenance");
        assert_eq!(m["scheduled_for"], "2024-05-12T02:00:00.000Z");
        assert_eq!(m["scheduled_until"], "2024-05-12T04:00:00.000Z");
    }

    #[test]
    fn maintenance_update_statuses_use_maintenance_names() {
        let mut snap = snapshot();
        let mut m = maintenance("m", MaintenanceStatus::InProgress);
        m.incident_updates = vec![Update {
            id: "u".into(),
            status: MaintenanceStatus::InProgress,
            body: "Started".into(),
            created_at: crate::testutil::T,
            updated_at: crate::testutil::T,
            display_at: crate::testutil::T,
            affected_components: None,
            deliver_notifications: false,
        }];
        snap.scheduled_maintenances = vec![m];
        let d = doc(&snap, Endpoint::ActiveMaintenances);
        assert_eq!(d["scheduled_maintenances"][0]["incident_updates"][0]["status"], "in_progress");
    }
}
