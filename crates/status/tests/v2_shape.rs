//! Field-for-field compatibility with the Statuspage v2 public API.
//!
//! Each fixture under `tests/fixtures/` (see its README) is read into the model, rendered
//! back with `render_json`, and compared with a "same shape" checker: same keys in the same
//! order, same JSON types (null is its own type), same enum values, timestamps in the same
//! format — recursively. Then, since all data flows through, the values must match too.

#[path = "support/fixtures.rs"]
mod fixtures;

use fixtures::{fixture, snapshot};
use serde_json::Value;
use status::{Endpoint, Snapshot, render_json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Keys whose string values are enum members and must be equal, not merely strings.
const ENUM_KEYS: &[&str] = &["status", "impact", "indicator", "old_status", "new_status"];
/// Keys holding RFC 3339 timestamps.
const TIME_KEYS: &[&str] = &[
    "created_at",
    "updated_at",
    "monitoring_at",
    "resolved_at",
    "started_at",
    "display_at",
    "scheduled_for",
    "scheduled_until",
];

/// Every way `actual` differs in shape from `expected`, as `path: problem` lines.
fn shape_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(expected, actual, "$", None, &mut out);
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(expected: &Value, actual: &Value, path: &str, key: Option<&str>, out: &mut Vec<String>) {
    if kind(expected) != kind(actual) {
        out.push(format!("{path}: expected {}, got {}", kind(expected), kind(actual)));
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: Vec<&String> = e.keys().collect();
            let ak: Vec<&String> = a.keys().collect();
            if ek != ak {
                out.push(format!("{path}: keys {ek:?} != {ak:?}"));
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    walk(ev, av, &format!("{path}.{k}"), Some(k), out);
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!("{path}: {} elements expected, got {}", e.len(), a.len()));
            }
            for (n, (ev, av)) in e.iter().zip(a).enumerate() {
                walk(ev, av, &format!("{path}[{n}]"), None, out);
            }
        }
        (Value::String(e), Value::String(a)) => match key {
            Some(k) if ENUM_KEYS.contains(&k) && e != a => {
                out.push(format!("{path}: enum value {e:?} != {a:?}"));
            }
            Some(k) if TIME_KEYS.contains(&k) && timestamp_form(e) != timestamp_form(a) => {
                out.push(format!("{path}: timestamp form of {e:?} != {a:?}"));
            }
            Some("start_date") if date_form(e) != date_form(a) => {
                out.push(format!("{path}: date form of {e:?} != {a:?}"));
            }
            _ => {}
        },
        _ => {}
    }
}

/// The timestamp with every digit replaced by `9`, or an error marker if it is not RFC 3339.
fn timestamp_form(s: &str) -> String {
    if OffsetDateTime::parse(s, &Rfc3339).is_err() {
        return format!("not RFC 3339: {s}");
    }
    s.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect()
}

fn date_form(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect()
}

/// `{page, <key>: doc[key]}`: one member of a fixture as its own endpoint's document.
fn part(doc: &Value, key: &str) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("page".into(), doc["page"].clone());
    out.insert(key.into(), doc[key].clone());
    Value::Object(out)
}

#[track_caller]
fn assert_same(expected: &Value, snap: &Snapshot, endpoint: Endpoint) {
    let text = render_json(snap, endpoint);
    let actual: Value = serde_json::from_str(&text).expect("our output is JSON");
    let diff = shape_diff(expected, &actual);
    assert!(diff.is_empty(), "{}: shape differs:\n{}", endpoint.path(), diff.join("\n"));
    assert_eq!(&actual, expected, "{}: values differ", endpoint.path());
}

#[test]
fn summary_json() {
    let doc = fixture("summary.json");
    assert_same(&doc, &snapshot(&doc), Endpoint::Summary);
}

#[test]
fn status_json() {
    let doc = fixture("summary.json");
    assert_same(&part(&doc, "status"), &snapshot(&doc), Endpoint::Status);
}

#[test]
fn components_json() {
    let doc = fixture("summary.json");
    assert_same(&part(&doc, "components"), &snapshot(&doc), Endpoint::Components);
}

#[test]
fn incidents_unresolved_json() {
    let doc = fixture("summary.json");
    assert_same(&part(&doc, "incidents"), &snapshot(&doc), Endpoint::UnresolvedIncidents);
}

#[test]
fn scheduled_maintenances_active_json() {
    let doc = fixture("summary.json");
    assert_same(&part(&doc, "scheduled_maintenances"), &snapshot(&doc), Endpoint::ActiveMaintenances);
}

#[test]
fn incidents_json() {
    let doc = fixture("incidents.json");
    assert_same(&doc, &snapshot(&doc), Endpoint::Incidents);
}

#[test]
fn scheduled_maintenances_json() {
    let doc = fixture("scheduled-maintenances.json");
    assert_same(&doc, &snapshot(&doc), Endpoint::ScheduledMaintenances);
}

#[test]
fn scheduled_maintenances_upcoming_json() {
    let doc = fixture("scheduled-maintenances.json");
    let mut expected = doc.clone();
    expected["scheduled_maintenances"].as_array_mut().expect("list").retain(|m| m["status"] == "scheduled");
    assert_eq!(expected["scheduled_maintenances"].as_array().map(Vec::len), Some(1));
    assert_same(&expected, &snapshot(&doc), Endpoint::UpcomingMaintenances);
}

#[test]
fn empty_lists_keep_the_document_shape() {
    // A quiet page still serves every key, with empty arrays rather than missing members.
    let doc = fixture("summary.json");
    let mut snap = snapshot(&doc);
    snap.incidents.clear();
    snap.scheduled_maintenances.clear();
    let actual: Value = serde_json::from_str(&render_json(&snap, Endpoint::Summary)).unwrap();
    let keys: Vec<&String> = actual.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["page", "components", "incidents", "scheduled_maintenances", "status"]);
    assert_eq!(actual["incidents"], Value::Array(vec![]));
}

#[test]
fn the_checker_catches_each_kind_of_difference() {
    let expected = serde_json::json!({
        "a": null, "status": "resolved", "created_at": "2024-05-10T11:58:04.512Z",
        "list": [{"x": 1}], "start_date": "2024-05-10"
    });
    let same = expected.clone();
    assert!(shape_diff(&expected, &same).is_empty());

    let cases = [
        (
            serde_json::json!({"a": "x", "status": "resolved", "created_at": "2024-05-10T11:58:04.512Z", "list": [{"x": 1}], "start_date": "2024-05-10"}),
            "expected null, got string",
        ),
        (
            serde_json::json!({"a": null, "status": "monitoring", "created_at": "2024-05-10T11:58:04.512Z", "list": [{"x": 1}], "start_date": "2024-05-10"}),
            "enum value",
        ),
        (
            serde_json::json!({"a": null, "status": "resolved", "created_at": "2024-05-10T11:58:04Z", "list": [{"x": 1}], "start_date": "2024-05-10"}),
            "timestamp form",
        ),
        (
            serde_json::json!({"a": null, "status": "resolved", "created_at": "2024-05-10T11:58:04.512Z", "list": [{"y": 1}], "start_date": "2024-05-10"}),
            "keys",
        ),
        (
            serde_json::json!({"a": null, "status": "resolved", "created_at": "2024-05-10T11:58:04.512Z", "list": [{"x": 1.5}], "start_date": "2024-05-10"}),
            "expected integer, got float",
        ),
        (
            serde_json::json!({"a": null, "status": "resolved", "created_at": "2024-05-10T11:58:04.512Z", "list": [], "start_date": "2024-05-10"}),
            "1 elements expected, got 0",
        ),
        (
            serde_json::json!({"status": "resolved", "a": null, "created_at": "2024-05-10T11:58:04.512Z", "list": [{"x": 1}], "start_date": "2024-05-10"}),
            "keys",
        ),
        (
            serde_json::json!({"a": null, "status": "resolved", "created_at": "2024-05-10T11:58:04.512Z", "list": [{"x": 1}], "start_date": "2024-5-10"}),
            "date form",
        ),
    ];
    for (actual, problem) in cases {
        let diff = shape_diff(&expected, &actual);
        assert!(diff.iter().any(|d| d.contains(problem)), "{problem}: {diff:?}");
    }
}
