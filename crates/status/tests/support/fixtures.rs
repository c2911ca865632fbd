//! Reads the Statuspage-shaped fixtures under `tests/fixtures/` into the model.
//!
//! Shared by the integration tests through `#[path]` (a plain `tests/*.rs` file would be
//! built as a test crate of its own).

#![allow(dead_code)] // each test crate uses a different part

use serde_json::Value;
use status::{AffectedComponent, Component, Incident, Page, ScheduledMaintenance, Snapshot, Update};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// Reading a fixture into the model. Only stored fields are read; derived ones (every
// page_id, a group's child list, an incident's embedded components, the tweet fields) must
// come back from the renderer on their own.

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

fn opt_s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn t(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("timestamp"), &Rfc3339).expect("RFC 3339")
}

fn opt_t(v: &Value) -> Option<OffsetDateTime> {
    (!v.is_null()).then(|| t(v))
}

fn parse<T: std::str::FromStr<Err = status::ParseEnumError>>(v: &Value) -> T {
    v.as_str().expect("enum string").parse().unwrap_or_else(|e| panic!("{e}"))
}

fn b(v: &Value) -> bool {
    v.as_bool().expect("bool")
}

fn page(v: &Value) -> Page {
    Page {
        id: s(&v["id"]),
        name: s(&v["name"]),
        url: s(&v["url"]),
        time_zone: s(&v["time_zone"]),
        updated_at: t(&v["updated_at"]),
    }
}

fn component(v: &Value) -> Component {
    Component {
        id: s(&v["id"]),
        name: s(&v["name"]),
        description: opt_s(&v["description"]),
        position: u32::try_from(v["position"].as_u64().expect("position")).expect("u32"),
        status: parse(&v["status"]),
        created_at: t(&v["created_at"]),
        updated_at: t(&v["updated_at"]),
        showcase: b(&v["showcase"]),
        start_date: v["start_date"]
            .as_str()
            .map(|d| time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).expect("date")),
        group_id: opt_s(&v["group_id"]),
        group: b(&v["group"]),
        only_show_if_degraded: b(&v["only_show_if_degraded"]),
    }
}

fn update<S: std::str::FromStr<Err = status::ParseEnumError>>(v: &Value) -> Update<S> {
    Update {
        id: s(&v["id"]),
        status: parse(&v["status"]),
        body: s(&v["body"]),
        created_at: t(&v["created_at"]),
        updated_at: t(&v["updated_at"]),
        display_at: t(&v["display_at"]),
        affected_components: v["affected_components"].as_array().map(|list| {
            list.iter()
                .map(|a| AffectedComponent {
                    code: s(&a["code"]),
                    name: s(&a["name"]),
                    old_status: parse(&a["old_status"]),
                    new_status: parse(&a["new_status"]),
                })
                .collect()
        }),
        deliver_notifications: b(&v["deliver_notifications"]),
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().expect("components").iter().map(|c| s(&c["id"])).collect()
}

fn incident(v: &Value) -> Incident {
    Incident {
        id: s(&v["id"]),
        name: s(&v["name"]),
        status: parse(&v["status"]),
        impact: parse(&v["impact"]),
        created_at: t(&v["created_at"]),
        updated_at: t(&v["updated_at"]),
        started_at: t(&v["started_at"]),
        monitoring_at: opt_t(&v["monitoring_at"]),
        resolved_at: opt_t(&v["resolved_at"]),
        shortlink: s(&v["shortlink"]),
        incident_updates: v["incident_updates"].as_array().expect("updates").iter().map(update).collect(),
        component_ids: ids(&v["components"]),
    }
}

fn maintenance(v: &Value) -> ScheduledMaintenance {
    ScheduledMaintenance {
        id: s(&v["id"]),
        name: s(&v["name"]),
        status: parse(&v["status"]),
        impact: parse(&v["impact"]),
        created_at: t(&v["created_at"]),
        updated_at: t(&v["updated_at"]),
        started_at: t(&v["started_at"]),
        monitoring_at: opt_t(&v["monitoring_at"]),
        resolved_at: opt_t(&v["resolved_at"]),
        shortlink: s(&v["shortlink"]),
        scheduled_for: t(&v["scheduled_for"]),
        scheduled_until: t(&v["scheduled_until"]),
        incident_updates: v["incident_updates"].as_array().expect("updates").iter().map(update).collect(),
        component_ids: ids(&v["components"]),
    }
}

/// The snapshot a fixture describes: its page, its components (top-level, else the ones
/// embedded in incidents and maintenance), incidents and maintenance.
pub fn snapshot(doc: &Value) -> Snapshot {
    let empty = Vec::new();
    let list = |key: &str| doc.get(key).and_then(Value::as_array).unwrap_or(&empty);
    let mut components: Vec<Component> = list("components").iter().map(component).collect();
    for notice in list("incidents").iter().chain(list("scheduled_maintenances")) {
        for c in notice["components"].as_array().expect("components") {
            if !components.iter().any(|k| k.id == s(&c["id"])) {
                components.push(component(c));
            }
        }
    }
    Snapshot {
        page: page(&doc["page"]),
        components,
        incidents: list("incidents").iter().map(incident).collect(),
        scheduled_maintenances: list("scheduled_maintenances").iter().map(maintenance).collect(),
    }
}
