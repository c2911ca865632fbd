//! The pure logic of Palisade's public status page: no HTTP server, no database.
//!
//! The gateway owns the routes and the store; this crate turns a [`Snapshot`] of the page
//! (components, incidents, scheduled maintenance) into everything the page serves:
//!
//! - [`overall_status`]: the page-wide indicator and its description ("All Systems Operational").
//! - [`render_json`]: the Atlassian Statuspage v2 public JSON, field for field, so existing
//!   aggregators and client libraries read it unchanged.
//! - [`uptime_history`]: 90 UTC days of uptime per component from its state-change log.
//! - [`atom_feed`]: an RFC 4287 feed of incidents.
//! - [`badge_svg`]: a "status | operational" badge.
//! - [`render_page`]: the self-contained HTML page.
//!
//! Every function that depends on the time takes `now` explicitly, so the page is
//! reproducible and testable without a clock.

mod atom;
mod badge;
mod escape;
mod html;
mod model;
mod overall;
#[cfg(test)]
mod testutil;
mod timestamp;
mod uptime;
mod v2;

pub use atom::{FEED_ENTRIES, atom_feed};
pub use badge::badge_svg;
pub use html::{CSS as PAGE_CSS, PAST_INCIDENT_DAYS, PageView, render_page};
pub use model::{
    AffectedComponent, Component, ComponentStatus, Impact, Incident, IncidentStatus, IncidentUpdate, MaintenanceStatus,
    MaintenanceUpdate, Page, ParseEnumError, Progress, ScheduledMaintenance, Snapshot, Update,
};
pub use overall::{Indicator, OverallStatus, overall_status};
pub use uptime::{DayUptime, HISTORY_DAYS, StatusChange, UptimeHistory, downtime_weight, uptime_history};
pub use v2::{Endpoint, LIST_LIMIT, render_json};
