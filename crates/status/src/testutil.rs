//! Builders for the unit tests: a small page at a fixed instant.

use time::OffsetDateTime;
use time::macros::datetime;

use crate::model::{
    Component, ComponentStatus, Impact, Incident, IncidentStatus, IncidentUpdate, MaintenanceStatus, Page,
    ScheduledMaintenance, Snapshot, Update,
};

/// "Now" in the unit tests.
pub(crate) const NOW: OffsetDateTime = datetime!(2024-05-10 12:00 UTC);
/// The creation time of every built object unless a test changes it.
pub(crate) const T: OffsetDateTime = datetime!(2024-01-01 0:00 UTC);

pub(crate) fn snapshot() -> Snapshot {
    Snapshot {
        page: Page {
            id: "pg1".into(),
            name: "Example".into(),
            url: "https://status.example.com".into(),
            time_zone: "Etc/UTC".into(),
            updated_at: datetime!(2024-05-10 11:00 UTC),
        },
        components: vec![],
        incidents: vec![],
        scheduled_maintenances: vec![],
    }
}

pub(crate) fn component(id: &str, status: ComponentStatus) -> Component {
    Component {
        id: id.into(),
        name: format!("Component {id}"),
        description: None,
        position: 1,
        status,
        created_at: T,
        updated_at: T,
        showcase: true,
        start_date: None,
        group_id: None,
        group: false,
        only_show_if_degraded: false,
    }
}

pub(crate) fn incident(id: &str, name: &str, status: IncidentStatus, impact: Impact) -> Incident {
    Incident {
        id: id.into(),
        name: name.into(),
        status,
        impact,
        created_at: T,
        updated_at: T,
        started_at: T,
        monitoring_at: None,
        resolved_at: None,
        shortlink: format!("https://status.example.com/incidents/{id}"),
        incident_updates: vec![],
        component_ids: vec![],
    }
}

pub(crate) fn update(id: &str, status: IncidentStatus, body: &str, at: OffsetDateTime) -> IncidentUpdate {
    Update {
        id: id.into(),
        status,
        body: body.into(),
        created_at: at,
        updated_at: at,
        display_at: at,
        affected_components: None,
        deliver_notifications: true,
    }
}

pub(crate) fn maintenance(id: &str, status: MaintenanceStatus) -> ScheduledMaintenance {
    ScheduledMaintenance {
        id: id.into(),
        name: format!("Maintenance {id}"),
        status,
        impact: Impact::Maintenance,
        created_at: T,
        updated_at: T,
        started_at: T,
        monitoring_at: None,
        resolved_at: None,
        shortlink: String::new(),
        scheduled_for: datetime!(2024-05-12 02:00 UTC),
        scheduled_until: datetime!(2024-05-12 04:00 UTC),
        incident_updates: vec![],
        component_ids: vec![],
    }
}

/// Parses `xml` to the end with a real XML parser: the number of elements, or the first
/// well-formedness error (mismatched or unclosed tags, bad attributes, unknown entities).
pub(crate) fn xml_element_count(xml: &str) -> Result<usize, String> {
    use quick_xml::events::{BytesStart, Event};

    fn check_attributes(e: &BytesStart<'_>) -> Result<(), String> {
        for attr in e.attributes() {
            let attr = attr.map_err(|err| err.to_string())?;
            attr.normalized_value(quick_xml::XmlVersion::default()).map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut depth = 0i64;
    let mut elements = 0;
    loop {
        let event = reader.read_event().map_err(|e| format!("at {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                check_attributes(&e)?;
                depth += 1;
                elements += 1;
            }
            Event::Empty(e) => {
                check_attributes(&e)?;
                elements += 1;
            }
            Event::End(_) => depth -= 1,
            Event::GeneralRef(r) => {
                let known = matches!(&*r, "amp" | "lt" | "gt" | "quot" | "apos");
                let char_ref = r.resolve_char_ref().map_err(|e| e.to_string())?;
                if !known && char_ref.is_none() {
                    return Err(format!("unknown entity &{};", &*r));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{depth} element(s) left open"));
    }
    Ok(elements)
}
