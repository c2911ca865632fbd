//! The page-wide status: one indicator and one sentence at the top of the page.
//!
//! # The rule
//!
//! Statuspage documents the descriptions and that they roll up from the components and the
//! open incidents; this is our reading of it, stated exactly.
//!
//! **From components.** Only leaf components count: a group only summarises its children.
//! "All" below means every leaf component; with one component, "some" is "all".
//!
//! | leaf components                    | indicator     | description                 |
//! |------------------------------------|---------------|-----------------------------|
//! | all `major_outage`                 | `critical`    | Major System Outage         |
//! | some `major_outage`                | `major`       | Partial System Outage       |
//! | all `partial_outage`               | `major`       | Partial System Outage       |
//! | some `partial_outage`              | `minor`       | Minor Service Outage        |
//! | all `degraded_performance`         | `minor`       | Degraded System Service     |
//! | some `degraded_performance`        | `minor`       | Partially Degraded Service  |
//! | some `under_maintenance`           | `maintenance` | Service Under Maintenance   |
//! | otherwise (or no components)       | `none`        | All Systems Operational     |
//!
//! The first row that matches wins, so the worst status present decides.
//!
//! **From open work.** Each unresolved incident contributes its impact: `critical` → Major
//! System Outage, `major` → Partial System Outage, `minor` → Minor Service Outage,
//! `maintenance` → Service Under Maintenance; `none` contributes nothing. A maintenance that
//! is in progress or verifying contributes Service Under Maintenance.
//!
//! **Result.** The most severe contribution, ordering indicators
//! `none < maintenance < minor < major < critical`. On a tie the component-derived sentence
//! wins because it is the more specific one ("Partially Degraded Service" rather than
//! "Minor Service Outage").

use crate::model::{ComponentStatus, Impact, Snapshot, wire_enum};

wire_enum! {
    /// The page-wide indicator of `status.json`. Declared from least to most severe so
    /// `Ord` answers "which is worse"; maintenance is planned, so it ranks below any outage.
    #[derive(PartialOrd, Ord)]
    Indicator, "status indicator" {
        None = "none", "None";
        Maintenance = "maintenance", "Maintenance";
        Minor = "minor", "Minor";
        Major = "major", "Major";
        Critical = "critical", "Critical";
    }
}

/// The `status` object of `status.json` and `summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OverallStatus {
    pub indicator: Indicator,
    pub description: &'static str,
}

const OPERATIONAL: OverallStatus = OverallStatus::new(Indicator::None, "All Systems Operational");
const MAJOR_SYSTEM_OUTAGE: OverallStatus = OverallStatus::new(Indicator::Critical, "Major System Outage");
const PARTIAL_SYSTEM_OUTAGE: OverallStatus = OverallStatus::new(Indicator::Major, "Partial System Outage");
const MINOR_SERVICE_OUTAGE: OverallStatus = OverallStatus::new(Indicator::Minor, "Minor Service Outage");
const DEGRADED_SYSTEM_SERVICE: OverallStatus = OverallStatus::new(Indicator::Minor, "Degraded System Service");
const PARTIALLY_DEGRADED_SERVICE: OverallStatus = OverallStatus::new(Indicator::Minor, "Partially Degraded Service");
const UNDER_MAINTENANCE: OverallStatus = OverallStatus::new(Indicator::Maintenance, "Service Under Maintenance");

impl OverallStatus {
    const fn new(indicator: Indicator, description: &'static str) -> Self {
        Self { indicator, description }
    }
}

/// The page-wide status of `snapshot`, by the rule in this module's documentation.
pub fn overall_status(snapshot: &Snapshot) -> OverallStatus {
    let from_components = from_components(snapshot.components.iter().filter(|c| !c.group).map(|c| c.status));

    let from_incidents =
        snapshot.incidents.iter().filter(|i| i.status.is_unresolved()).filter_map(|i| match i.impact {
            Impact::None => None,
            Impact::Minor => Some(MINOR_SERVICE_OUTAGE),
            Impact::Major => Some(PARTIAL_SYSTEM_OUTAGE),
            Impact::Critical => Some(MAJOR_SYSTEM_OUTAGE),
            Impact::Maintenance => Some(UNDER_MAINTENANCE),
        });
    let from_maintenance =
        snapshot.scheduled_maintenances.iter().filter(|m| m.status.is_active()).map(|_| UNDER_MAINTENANCE);

    // `max_by_key` keeps the last of equal maxima, so the component-derived value goes last
    // to win ties.
    from_incidents
        .chain(from_maintenance)
        .chain(std::iter::once(from_components))
        .max_by_key(|s| s.indicator)
        .unwrap_or(OPERATIONAL)
}

fn from_components(statuses: impl Iterator<Item = ComponentStatus>) -> OverallStatus {
    let mut count = 0usize;
    let mut worst = ComponentStatus::Operational;
    let mut worst_count = 0usize;
    for s in statuses {
        count += 1;
        if s > worst {
            worst = s;
            worst_count = 0;
        }
        if s == worst {
            worst_count += 1;
        }
    }
    let all = worst_count == count;
    match worst {
        ComponentStatus::MajorOutage if all => MAJOR_SYSTEM_OUTAGE,
        ComponentStatus::MajorOutage => PARTIAL_SYSTEM_OUTAGE,
        ComponentStatus::PartialOutage if all => PARTIAL_SYSTEM_OUTAGE,
        ComponentStatus::PartialOutage => MINOR_SERVICE_OUTAGE,
        ComponentStatus::DegradedPerformance if all => DEGRADED_SYSTEM_SERVICE,
        ComponentStatus::DegradedPerformance => PARTIALLY_DEGRADED_SERVICE,
        ComponentStatus::UnderMaintenance => UNDER_MAINTENANCE,
        ComponentStatus::Operational => OPERATIONAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IncidentStatus, MaintenanceStatus};
    use crate::testutil::{component, incident, maintenance, snapshot};

    fn with_components(statuses: &[ComponentStatus]) -> Snapshot {
        let mut snap = snapshot();
        snap.components = statuses.iter().enumerate().map(|(i, s)| component(&i.to_string(), *s)).collect();
        snap
    }

    fn of(statuses: &[ComponentStatus]) -> (Indicator, &'static str) {
        let s = overall_status(&with_components(statuses));
        (s.indicator, s.description)
    }

    fn open(impact: Impact) -> crate::model::Incident {
        incident("i", "i", IncidentStatus::Investigating, impact)
    }

    #[test]
    fn component_rollup_table() {
        use ComponentStatus::*;
        assert_eq!(of(&[]), (Indicator::None, "All Systems Operational"));
        assert_eq!(of(&[Operational, Operational]), (Indicator::None, "All Systems Operational"));
        assert_eq!(of(&[MajorOutage, MajorOutage]), (Indicator::Critical, "Major System Outage"));
        assert_eq!(of(&[MajorOutage, Operational]), (Indicator::Major, "Partial System Outage"));
        assert_eq!(of(&[MajorOutage, PartialOutage]), (Indicator::Major, "Partial System Outage"));
        assert_eq!(of(&[PartialOutage, PartialOutage]), (Indicator::Major, "Partial System Outage"));
        assert_eq!(of(&[PartialOutage, Operational]), (Indicator::Minor, "Minor Service Outage"));
        assert_eq!(of(&[DegradedPerformance, DegradedPerformance]), (Indicator::Minor, "Degraded System Service"));
        assert_eq!(of(&[DegradedPerformance, UnderMaintenance]), (Indicator::Minor, "Partially Degraded Service"));
        assert_eq!(of(&[UnderMaintenance, Operational]), (Indicator::Maintenance, "Service Under Maintenance"));
        // One component: "some" is "all".
        assert_eq!(of(&[MajorOutage]), (Indicator::Critical, "Major System Outage"));
        assert_eq!(of(&[PartialOutage]), (Indicator::Major, "Partial System Outage"));
    }

    #[test]
    fn groups_do_not_count() {
        let mut group = component("g", ComponentStatus::MajorOutage);
        group.group = true;
        let mut child = component("c", ComponentStatus::Operational);
        child.group_id = Some("g".into());
        let mut snap = snapshot();
        snap.components = vec![group, child];
        let s = overall_status(&snap);
        assert_eq!(s.indicator, Indicator::None);
    }

    #[test]
    fn unresolved_incidents_raise_the_indicator() {
        let mut snap = with_components(&[ComponentStatus::Operational]);
        snap.incidents.push(open(Impact::Minor));
        assert_eq!(overall_status(&snap), MINOR_SERVICE_OUTAGE);
        snap.incidents.push(incident("j", "j", IncidentStatus::Identified, Impact::Critical));
        assert_eq!(overall_status(&snap), MAJOR_SYSTEM_OUTAGE);
        snap.incidents.push(incident("k", "k", IncidentStatus::Monitoring, Impact::Major));
        assert_eq!(overall_status(&snap), MAJOR_SYSTEM_OUTAGE);
    }

    #[test]
    fn resolved_incidents_and_impact_none_do_not() {
        let mut snap = with_components(&[ComponentStatus::Operational]);
        snap.incidents.push(incident("r", "r", IncidentStatus::Resolved, Impact::Critical));
        snap.incidents.push(incident("p", "p", IncidentStatus::Postmortem, Impact::Critical));
        snap.incidents.push(open(Impact::None));
        assert_eq!(overall_status(&snap), OPERATIONAL);
    }

    #[test]
    fn components_win_ties_with_incidents() {
        let mut snap = with_components(&[ComponentStatus::DegradedPerformance]);
        snap.incidents.push(open(Impact::Minor));
        assert_eq!(overall_status(&snap), DEGRADED_SYSTEM_SERVICE);
    }

    #[test]
    fn only_active_maintenance_counts() {
        let mut snap = with_components(&[ComponentStatus::Operational]);
        snap.scheduled_maintenances.push(maintenance("a", MaintenanceStatus::Scheduled));
        snap.scheduled_maintenances.push(maintenance("b", MaintenanceStatus::Completed));
        assert_eq!(overall_status(&snap), OPERATIONAL);
        snap.scheduled_maintenances.push(maintenance("c", MaintenanceStatus::Verifying));
        assert_eq!(overall_status(&snap), UNDER_MAINTENANCE);
        // An outage outranks maintenance.
        snap.components[0].status = ComponentStatus::PartialOutage;
        assert_eq!(overall_status(&snap), PARTIAL_SYSTEM_OUTAGE);
    }

    #[test]
    fn indicator_wire_names_and_order() {
        let names: Vec<_> = Indicator::ALL.iter().map(|i| i.as_str()).collect();
        assert_eq!(names, ["none", "maintenance", "minor", "major", "critical"]);
        assert!(Indicator::Maintenance < Indicator::Minor);
    }
}
