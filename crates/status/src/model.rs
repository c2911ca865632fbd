//! The status page's domain: the page, its components, incidents and scheduled maintenance.
//!
//! Field names follow the Statuspage v2 API so the mapping to the wire format stays obvious.
//! A few wire fields are derived rather than stored, so that they cannot disagree with the
//! data they describe: every `page_id` comes from [`Page::id`], an incident's `components`
//! are looked up from [`Incident::component_ids`], and a group's child list comes from the
//! children's [`Component::group_id`].

use time::{Date, OffsetDateTime};

/// A value read from outside (the store, a request) that names no variant of the enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct ParseEnumError {
    /// Which enum was being parsed, e.g. "component status".
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted wire names, comma-separated.
    pub expected: &'static str,
}

/// Declares a wire enum: its Statuspage name (`as_str`, `FromStr`, `Display`) and its
/// human label, in one table so the two can never drift apart.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, $label:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as the Statuspage v2 API spells it.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire,)+ }
            }

            /// The value as a reader of the page sees it.
            pub fn label(self) -> &'static str {
                match self { $(Self::$variant => $label,)+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err($crate::model::ParseEnumError {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($wire, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// The state of one component. Variants are declared from best to worst, so `Ord`
    /// answers "which is worse": maintenance is planned and announced, so it ranks just
    /// above operational and below any unplanned degradation.
    #[derive(PartialOrd, Ord)]
    ComponentStatus, "component status" {
        Operational = "operational", "Operational";
        UnderMaintenance = "under_maintenance", "Under Maintenance";
        DegradedPerformance = "degraded_performance", "Degraded Performance";
        PartialOutage = "partial_outage", "Partial Outage";
        MajorOutage = "major_outage", "Major Outage";
    }
}

wire_enum! {
    /// Where an incident is in its life.
    IncidentStatus, "incident status" {
        Investigating = "investigating", "Investigating";
        Identified = "identified", "Identified";
        Monitoring = "monitoring", "Monitoring";
        Resolved = "resolved", "Resolved";
        Postmortem = "postmortem", "Postmortem";
    }
}

impl IncidentStatus {
    /// Investigating, identified or monitoring: what `incidents/unresolved.json` lists.
    pub fn is_unresolved(self) -> bool {
        matches!(self, Self::Investigating | Self::Identified | Self::Monitoring)
    }
}

wire_enum! {
    /// Where a scheduled maintenance is in its life.
    MaintenanceStatus, "maintenance status" {
        Scheduled = "scheduled", "Scheduled";
        InProgress = "in_progress", "In progress";
        Verifying = "verifying", "Verifying";
        Completed = "completed", "Completed";
    }
}

impl MaintenanceStatus {
    /// In progress or verifying: what `scheduled-maintenances/active.json` lists.
    pub fn is_active(self) -> bool {
        matches!(self, Self::InProgress | Self::Verifying)
    }
}

wire_enum! {
    /// How badly an incident hurts. `maintenance` is what Statuspage reports for
    /// scheduled maintenance; incidents use the other four.
    Impact, "impact" {
        None = "none", "None";
        Minor = "minor", "Minor";
        Major = "major", "Major";
        Critical = "critical", "Critical";
        Maintenance = "maintenance", "Maintenance";
    }
}

/// The status type of an [`Update`]: [`IncidentStatus`] or [`MaintenanceStatus`].
///
/// Sealed: the wire format knows exactly these two.
pub trait Progress: Copy + std::fmt::Debug + serde::Serialize + sealed::Sealed {
    /// The value as the Statuspage v2 API spells it.
    fn as_str(self) -> &'static str;
    /// The value as a reader of the page sees it.
    fn label(self) -> &'static str;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::IncidentStatus {}
    impl Sealed for super::MaintenanceStatus {}
}

impl Progress for IncidentStatus {
    fn as_str(self) -> &'static str {
        IncidentStatus::as_str(self)
    }
    fn label(self) -> &'static str {
        IncidentStatus::label(self)
    }
}

impl Progress for MaintenanceStatus {
    fn as_str(self) -> &'static str {
        MaintenanceStatus::as_str(self)
    }
    fn label(self) -> &'static str {
        MaintenanceStatus::label(self)
    }
}

/// The status page itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub id: String,
    pub name: String,
    /// Public URL of the HTML page, without a trailing slash.
    pub url: String,
    /// IANA name, e.g. `Etc/UTC`. Reported as is; every timestamp is written in UTC.
    pub time_zone: String,
    pub updated_at: OffsetDateTime,
}

/// One thing whose status the page reports (an API, a region), or a group of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Display order, ascending; ties keep the order the caller gave.
    pub position: u32,
    pub status: ComponentStatus,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Show the 90-day uptime bar for this component.
    pub showcase: bool,
    /// The day uptime history starts, if not the creation day.
    pub start_date: Option<Date>,
    /// The group this component belongs to (one level of nesting, as in Statuspage).
    pub group_id: Option<String>,
    /// This component is a group heading; its children name it in `group_id`.
    pub group: bool,
    /// Hide from the HTML page while operational.
    pub only_show_if_degraded: bool,
}

impl Component {
    /// Where its uptime history begins: the midnight (UTC) of `start_date` if set, else
    /// `created_at`. Pass this as `since` to [`crate::uptime_history`].
    pub fn history_start(&self) -> OffsetDateTime {
        self.start_date.map_or(self.created_at, |d| d.midnight().assume_utc())
    }
}

/// A component status change recorded on an incident update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedComponent {
    /// The component id (Statuspage calls it `code` here).
    pub code: String,
    pub name: String,
    pub old_status: ComponentStatus,
    pub new_status: ComponentStatus,
}

/// One message posted on an incident or a maintenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<S> {
    pub id: String,
    pub status: S,
    /// Plain text; line breaks are kept on the page.
    pub body: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// When the update is shown as posted; may be backdated. Sorting uses this.
    pub display_at: OffsetDateTime,
    /// `None` when the update changed no component (the wire carries `null`).
    pub affected_components: Option<Vec<AffectedComponent>>,
    pub deliver_notifications: bool,
}

/// An update on an [`Incident`].
pub type IncidentUpdate = Update<IncidentStatus>;
/// An update on a [`ScheduledMaintenance`].
pub type MaintenanceUpdate = Update<MaintenanceStatus>;

/// Something unplanned that hurts the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: String,
    pub name: String,
    pub status: IncidentStatus,
    pub impact: Impact,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// When the trouble began (may precede `created_at` when backfilled).
    pub started_at: OffsetDateTime,
    pub monitoring_at: Option<OffsetDateTime>,
    pub resolved_at: Option<OffsetDateTime>,
    /// Public link to the incident; the feed links entries here.
    pub shortlink: String,
    pub incident_updates: Vec<IncidentUpdate>,
    /// Ids of the affected components; unknown ids are left out of the JSON.
    pub component_ids: Vec<String>,
}

/// Planned work announced ahead of time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledMaintenance {
    pub id: String,
    pub name: String,
    pub status: MaintenanceStatus,
    pub impact: Impact,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub started_at: OffsetDateTime,
    /// When it entered `verifying`.
    pub monitoring_at: Option<OffsetDateTime>,
    /// When it was completed.
    pub resolved_at: Option<OffsetDateTime>,
    pub shortlink: String,
    pub scheduled_for: OffsetDateTime,
    pub scheduled_until: OffsetDateTime,
    pub incident_updates: Vec<MaintenanceUpdate>,
    pub component_ids: Vec<String>,
}

/// Everything the page shows at one moment; the input to every renderer.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub page: Page,
    pub components: Vec<Component>,
    pub incidents: Vec<Incident>,
    pub scheduled_maintenances: Vec<ScheduledMaintenance>,
}

impl Snapshot {
    /// The component with this id, if any.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_through_from_str() {
        for s in ComponentStatus::ALL {
            assert_eq!(s.as_str().parse::<ComponentStatus>(), Ok(*s));
        }
        for s in IncidentStatus::ALL {
            assert_eq!(s.as_str().parse::<IncidentStatus>(), Ok(*s));
        }
        for s in MaintenanceStatus::ALL {
            assert_eq!(s.as_str().parse::<MaintenanceStatus>(), Ok(*s));
        }
        for s in Impact::ALL {
            assert_eq!(s.as_str().parse::<Impact>(), Ok(*s));
        }
    }

    #[test]
    fn wire_names_are_the_statuspage_ones() {
        let names = |all: &[&str]| all.join(",");
        assert_eq!(
            names(&ComponentStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            "operational,under_maintenance,degraded_performance,partial_outage,major_outage"
        );
        assert_eq!(
            names(&IncidentStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            "investigating,identified,monitoring,resolved,postmortem"
        );
        assert_eq!(
            names(&MaintenanceStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            "scheduled,in_progress,verifying,completed"
        );
        assert_eq!(
            names(&Impact::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
            "none,minor,major,critical,maintenance"
        );
    }

    #[test]
    fn unknown_value_names_the_kind_and_the_choices() {
        let err = "down".parse::<ComponentStatus>().unwrap_err();
        assert_eq!(err.kind, "component status");
        assert_eq!(
            err.to_string(),
            "unknown component status \"down\"; expected one of: operational under_maintenance \
             degraded_performance partial_outage major_outage"
        );
        // Case matters on the wire: Statuspage never capitalises these.
        assert!("Operational".parse::<ComponentStatus>().is_err());
    }

    #[test]
    fn component_status_orders_by_severity() {
        use ComponentStatus::*;
        assert!(Operational < UnderMaintenance);
        assert!(UnderMaintenance < DegradedPerformance);
        assert!(DegradedPerformance < PartialOutage);
        assert!(PartialOutage < MajorOutage);
    }

    #[test]
    fn unresolved_and_active_statuses() {
        let unresolved: Vec<_> = IncidentStatus::ALL.iter().filter(|s| s.is_unresolved()).collect();
        assert_eq!(
            unresolved,
            [&IncidentStatus::Investigating, &IncidentStatus::Identified, &IncidentStatus::Monitoring]
        );
        let active: Vec<_> = MaintenanceStatus::ALL.iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [&MaintenanceStatus::InProgress, &MaintenanceStatus::Verifying]);
    }
}
