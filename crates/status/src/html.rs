//! The public HTML status page.
//!
//! Self-contained so it stays readable when everything else is down: inline CSS, no
//! script, no fonts, images or anything else fetched from elsewhere. Responsive (one
//! column, viewport meta), and dark when the reader's system is. Every operator-provided
//! string is HTML-escaped, and links are only written for `http(s)://` URLs and local paths.

use std::collections::HashMap;
use std::fmt::Write as _;

use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::escape::{self, safe_href};
use crate::model::{Component, ComponentStatus, Impact, Incident, Progress, ScheduledMaintenance, Snapshot, Update};
use crate::overall::{Indicator, overall_status};
use crate::timestamp;
use crate::uptime::UptimeHistory;

/// How many days (today included) the "Past Incidents" section covers.
pub const PAST_INCIDENT_DAYS: usize = 14;

/// Everything [`render_page`] needs.
#[derive(Debug, Clone, Copy)]
pub struct PageView<'a> {
    pub snapshot: &'a Snapshot,
    /// Uptime history by component id; a showcased component without one gets no bar.
    pub uptime: &'a HashMap<String, UptimeHistory>,
    pub now: OffsetDateTime,
    /// Where the Atom feed is served, for autodiscovery and a footer link.
    pub feed_url: Option<&'a str>,
}

/// The whole page as one HTML document.
pub fn render_page(view: &PageView<'_>) -> String {
    let snap = view.snapshot;
    let now = view.now.to_offset(UtcOffset::UTC);
    let status = overall_status(snap);
    let mut h = String::with_capacity(32 * 1024);

    h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{} Status</title>", esc(&snap.page.name));
    if let Some(feed) = view.feed_url.and_then(safe_href) {
        let _ = writeln!(
            h,
            "<link rel=\"alternate\" type=\"application/atom+xml\" title=\"{} incident history\" href=\"{}\">",
            esc(&snap.page.name),
            esc(feed)
        );
    }
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>\n<main>");
    let _ = writeln!(h, "<header><h1>{}</h1></header>", esc(&snap.page.name));
    let _ = writeln!(
        h,
        "<p class=\"banner {}\" role=\"status\">{}</p>",
        indicator_class(status.indicator),
        esc(status.description)
    );

    active_section(&mut h, snap);
    components_section(&mut h, view, now);
    upcoming_section(&mut h, snap);
    past_section(&mut h, snap, now);

    let _ = write!(h, "<footer><p>Last updated {}", esc(&timestamp::human(snap.page.updated_at)));
    if let Some(feed) = view.feed_url.and_then(safe_href) {
        let _ = write!(h, " · <a href=\"{}\">Atom feed</a>", esc(feed));
    }
    h.push_str("</p></footer>\n</main>\n</body>\n</html>\n");
    h
}

fn esc(s: &str) -> String {
    escape::text(s)
}

/// Unresolved incidents, then maintenance under way, each with every update.
fn active_section(h: &mut String, snap: &Snapshot) {
    let mut incidents: Vec<&Incident> = snap.incidents.iter().filter(|i| i.status.is_unresolved()).collect();
    incidents.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    let mut maintenances: Vec<&ScheduledMaintenance> =
        snap.scheduled_maintenances.iter().filter(|m| m.status.is_active()).collect();
    maintenances.sort_by_key(|m| m.scheduled_for);
    if incidents.is_empty() && maintenances.is_empty() {
        return;
    }
    h.push_str("<section class=\"active\" aria-label=\"Active incidents\">\n");
    for i in incidents {
        notice(h, &i.name, &i.shortlink, impact_class(i.impact), None, &i.incident_updates);
    }
    for m in maintenances {
        let window = maintenance_window(m);
        notice(h, &m.name, &m.shortlink, "maintenance", Some(&window), &m.incident_updates);
    }
    h.push_str("</section>\n");
}

/// One incident or maintenance as an article: title, optional subtitle, updates newest first.
fn notice<S: Progress>(
    h: &mut String,
    name: &str,
    link: &str,
    class: &str,
    subtitle: Option<&str>,
    updates: &[Update<S>],
) {
    let _ = write!(h, "<article class=\"notice {class}\"><h2>");
    title_link(h, name, link);
    h.push_str("</h2>\n");
    if let Some(sub) = subtitle {
        let _ = writeln!(h, "<p class=\"when\">{}</p>", esc(sub));
    }
    updates_list(h, updates);
    h.push_str("</article>\n");
}

fn title_link(h: &mut String, name: &str, link: &str) {
    match safe_href(link) {
        Some(href) => {
            let _ = write!(h, "<a href=\"{}\">{}</a>", esc(href), esc(name));
        }
        None => h.push_str(&esc(name)),
    }
}

fn updates_list<S: Progress>(h: &mut String, updates: &[Update<S>]) {
    let mut sorted: Vec<&Update<S>> = updates.iter().collect();
    sorted.sort_by_key(|u| std::cmp::Reverse(u.display_at));
    if sorted.is_empty() {
        return;
    }
    h.push_str("<ol class=\"updates\">\n");
    for u in sorted {
        let _ = writeln!(
            h,
            "<li><strong>{}</strong> – <span class=\"body\">{}</span><br><time datetime=\"{}\">{}</time></li>",
            u.status.label(),
            esc(&u.body),
            timestamp::atom(u.display_at),
            esc(&timestamp::human(u.display_at))
        );
    }
    h.push_str("</ol>\n");
}

fn maintenance_window(m: &ScheduledMaintenance) -> String {
    format!("Scheduled for {} – {}", timestamp::human(m.scheduled_for), timestamp::human(m.scheduled_until))
}

/// Components in display order, groups with their children, each with its uptime bar.
fn components_section(h: &mut String, view: &PageView<'_>, now: OffsetDateTime) {
    let snap = view.snapshot;
    let mut ordered: Vec<&Component> = snap.components.iter().collect();
    ordered.sort_by_key(|c| c.position);
    if ordered.is_empty() {
        return;
    }
    let spans = incident_spans(snap, now);
    let is_group = |id: &str| ordered.iter().any(|c| c.group && c.id == id);

    h.push_str(
        "<section aria-labelledby=\"components\">\n<h2 id=\"components\">Components</h2>\n<ul class=\"components\">\n",
    );
    for c in &ordered {
        // Children render inside their group; a child of an unknown group stands alone.
        if c.group_id.as_deref().is_some_and(is_group) {
            continue;
        }
        if c.group {
            let children: Vec<&Component> = ordered
                .iter()
                .copied()
                .filter(|k| k.group_id.as_deref() == Some(c.id.as_str()) && visible(k))
                .collect();
            if children.is_empty() && !visible(c) {
                continue;
            }
            h.push_str("<li class=\"group\">\n");
            component_row(h, c, None, &[]);
            h.push_str("<ul>\n");
            for k in children {
                component_item(h, k, view, &spans);
            }
            h.push_str("</ul>\n</li>\n");
        } else if visible(c) {
            component_item(h, c, view, &spans);
        }
    }
    h.push_str("</ul>\n</section>\n");
}

/// Statuspage's `only_show_if_degraded`: hidden while operational.
fn visible(c: &Component) -> bool {
    !(c.only_show_if_degraded && c.status == ComponentStatus::Operational)
}

fn component_item(h: &mut String, c: &Component, view: &PageView<'_>, spans: &[IncidentSpan<'_>]) {
    h.push_str("<li>\n");
    let history = if c.showcase { view.uptime.get(&c.id) } else { None };
    component_row(h, c, history, spans);
    h.push_str("</li>\n");
}

fn component_row(h: &mut String, c: &Component, history: Option<&UptimeHistory>, spans: &[IncidentSpan<'_>]) {
    let _ = writeln!(
        h,
        "<div class=\"row\"><span class=\"name\">{}</span><span class=\"state {}\">{}</span></div>",
        esc(&c.name),
        status_class(c.status),
        c.status.label()
    );
    if let Some(d) = &c.description {
        let _ = writeln!(h, "<p class=\"desc\">{}</p>", esc(d));
    }
    if let Some(history) = history {
        uptime_bar(h, c, history, spans);
    }
}

/// An incident's extent in time, for the day tooltips.
struct IncidentSpan<'a> {
    name: &'a str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    component_ids: &'a [String],
}

fn incident_spans(snap: &Snapshot, now: OffsetDateTime) -> Vec<IncidentSpan<'_>> {
    snap.incidents
        .iter()
        .map(|i| IncidentSpan {
            name: &i.name,
            from: i.started_at.min(i.created_at),
            // An open incident lasts until now; a closed one without a resolution time
            // ends at its last change.
            to: i.resolved_at.unwrap_or(if i.status.is_unresolved() { now } else { i.updated_at }).max(i.started_at),
            component_ids: &i.component_ids,
        })
        .collect()
}

const BAR_STEP: usize = 5;
const BAR_WIDTH: usize = 3;
const BAR_HEIGHT: usize = 34;

/// One rect per day, coloured by the day's worst status, with a tooltip naming the day,
/// its uptime and the incidents touching this component that day.
fn uptime_bar(h: &mut String, c: &Component, history: &UptimeHistory, spans: &[IncidentSpan<'_>]) {
    let days = history.days.len();
    let width = (days * BAR_STEP).saturating_sub(BAR_STEP - BAR_WIDTH);
    let _ = writeln!(
        h,
        "<svg class=\"bar\" viewBox=\"0 0 {width} {BAR_HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"Uptime of {} over the past {days} days\">",
        esc(&c.name)
    );
    for (n, day) in history.days.iter().enumerate() {
        let class = day.worst.map_or("nodata", status_class);
        let mut tip = date_label(day.date);
        match day.percent() {
            Some(p) => {
                let _ = write!(tip, " · {} uptime", format_percent(p));
            }
            None => tip.push_str(" · no data"),
        }
        let names = incidents_on(spans, &c.id, day.date);
        if !names.is_empty() {
            let _ = write!(tip, " · {}", names.join("; "));
        }
        let _ = writeln!(
            h,
            "<rect x=\"{}\" width=\"{BAR_WIDTH}\" height=\"{BAR_HEIGHT}\" class=\"{class}\"><title>{}</title></rect>",
            n * BAR_STEP,
            esc(&tip)
        );
    }
    h.push_str("</svg>\n");
    let overall = history.percent().map_or_else(|| "no data".to_owned(), |p| format!("{} uptime", format_percent(p)));
    let _ =
        writeln!(h, "<div class=\"legend\"><span>{days} days ago</span><span>{overall}</span><span>Today</span></div>");
}

fn incidents_on<'a>(spans: &[IncidentSpan<'a>], component: &str, date: Date) -> Vec<&'a str> {
    let start = date.midnight().assume_utc();
    let end = start + Duration::DAY;
    spans
        .iter()
        .filter(|s| s.component_ids.iter().any(|id| id == component))
        .filter(|s| s.from < end && s.to >= start)
        .map(|s| s.name)
        .collect()
}

/// Two decimals, as status pages show uptime ("99.95%"), but never rounding a day with
/// downtime up to a perfect 100.00%.
fn format_percent(p: f64) -> String {
    if p < 100.0 && p > 99.995 {
        return "99.99%".to_owned();
    }
    format!("{p:.2}%")
}

fn upcoming_section(h: &mut String, snap: &Snapshot) {
    let mut upcoming: Vec<&ScheduledMaintenance> =
        snap.scheduled_maintenances.iter().filter(|m| m.status == crate::model::MaintenanceStatus::Scheduled).collect();
    if upcoming.is_empty() {
        return;
    }
    upcoming.sort_by_key(|m| m.scheduled_for);
    h.push_str("<section aria-labelledby=\"upcoming\">\n<h2 id=\"upcoming\">Scheduled Maintenance</h2>\n");
    for m in upcoming {
        let window = maintenance_window(m);
        notice(h, &m.name, &m.shortlink, "maintenance", Some(&window), &m.incident_updates);
    }
    h.push_str("</section>\n");
}

/// The last [`PAST_INCIDENT_DAYS`] days, today first, each with the incidents that started
/// that day (UTC).
fn past_section(h: &mut String, snap: &Snapshot, now: OffsetDateTime) {
    h.push_str("<section aria-labelledby=\"past\">\n<h2 id=\"past\">Past Incidents</h2>\n");
    let days = std::iter::successors(Some(now.date()), |d| d.previous_day()).take(PAST_INCIDENT_DAYS);
    for day in days {
        let _ = writeln!(h, "<h3 class=\"day\">{}</h3>", date_label(day));
        let mut list: Vec<&Incident> =
            snap.incidents.iter().filter(|i| i.started_at.to_offset(UtcOffset::UTC).date() == day).collect();
        if list.is_empty() {
            h.push_str("<p class=\"quiet\">No incidents reported.</p>\n");
            continue;
        }
        list.sort_by_key(|i| std::cmp::Reverse(i.started_at));
        for i in list {
            notice(h, &i.name, &i.shortlink, impact_class(i.impact), None, &i.incident_updates);
        }
    }
    h.push_str("</section>\n");
}

fn date_label(d: Date) -> String {
    format!("{} {}, {}", short_month(d.month()), d.day(), d.year())
}

fn short_month(m: time::Month) -> &'static str {
    use time::Month::*;
    match m {
        January => "Jan",
        February => "Feb",
        March => "Mar",
        April => "Apr",
        May => "May",
        June => "Jun",
        July => "Jul",
        August => "Aug",
        September => "Sep",
        October => "Oct",
        November => "Nov",
        December => "Dec",
    }
}

fn status_class(s: ComponentStatus) -> &'static str {
    match s {
        ComponentStatus::Operational => "ok",
        ComponentStatus::UnderMaintenance => "maintenance",
        ComponentStatus::DegradedPerformance => "minor",
        ComponentStatus::PartialOutage => "major",
        ComponentStatus::MajorOutage => "critical",
    }
}

fn indicator_class(i: Indicator) -> &'static str {
    match i {
        Indicator::None => "ok",
        Indicator::Maintenance => "maintenance",
        Indicator::Minor => "minor",
        Indicator::Major => "major",
        Indicator::Critical => "critical",
    }
}

fn impact_class(i: Impact) -> &'static str {
    match i {
        Impact::None => "none",
        Impact::Minor => "minor",
        Impact::Major => "major",
        Impact::Critical => "critical",
        Impact::Maintenance => "maintenance",
    }
}

/// Colours follow the usual status-page scale: green, yellow, orange, red, blue.
/// The page's one stylesheet, inlined as the whole text of its `<style>` element: a
/// server can allow exactly it in a Content-Security-Policy by its SHA-256.
pub const CSS: &str = "
:root{--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--card:#f6f8fa;
--ok:#2fcc66;--minor:#d4a20b;--major:#e67e22;--critical:#e74c3c;--maintenance:#3498db;--nodata:#b3bac5;--none:#59636e}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#30363d;--card:#161b22;--nodata:#3d444d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:52rem;margin:0 auto;padding:1rem}
h1{font-size:1.6rem;margin:.5rem 0 1rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
h3.day{font-size:1rem;margin:1.25rem 0 .25rem;padding-bottom:.25rem;border-bottom:1px solid var(--line)}
a{color:inherit}
.banner{margin:0 0 1rem;padding:1rem 1.25rem;border-radius:6px;color:#fff;font-size:1.2rem;font-weight:600}
.banner.ok{background:var(--ok)}.banner.minor{background:var(--minor)}.banner.major{background:var(--major)}
.banner.critical{background:var(--critical)}.banner.maintenance{background:var(--maintenance)}
.notice{margin:0 0 1rem;padding:.75rem 1rem;border:1px solid var(--line);border-left:6px solid var(--none);border-radius:6px;background:var(--card)}
.notice h2{margin:0 0 .25rem;font-size:1.1rem}
.notice.minor{border-left-color:var(--minor)}.notice.major{border-left-color:var(--major)}
.notice.critical{border-left-color:var(--critical)}.notice.maintenance{border-left-color:var(--maintenance)}
.updates{list-style:none;margin:0;padding:0}
.updates li{margin:.5rem 0}
.body{white-space:pre-line;overflow-wrap:anywhere}
time,.when,.desc,.legend,.quiet{color:var(--muted);font-size:.875rem}
.desc{margin:0}
ul.components,ul.components ul{list-style:none;margin:0;padding:0}
ul.components>li{padding:.75rem 0;border-bottom:1px solid var(--line)}
ul.components ul>li{padding:.5rem 0 .5rem 1rem}
.row{display:flex;flex-wrap:wrap;justify-content:space-between;gap:.5rem}
.name{font-weight:600;overflow-wrap:anywhere}
.state.ok{color:var(--ok)}.state.minor{color:var(--minor)}.state.major{color:var(--major)}
.state.critical{color:var(--critical)}.state.maintenance{color:var(--maintenance)}
svg.bar{display:block;width:100%;height:2.1rem;margin-top:.4rem}
svg.bar .ok{fill:var(--ok)}svg.bar .minor{fill:var(--minor)}svg.bar .major{fill:var(--major)}
svg.bar .critical{fill:var(--critical)}svg.bar .maintenance{fill:var(--maintenance)}svg.bar .nodata{fill:var(--nodata)}
.legend{display:flex;justify-content:space-between;gap:.5rem}
footer{margin-top:2rem;padding-top:1rem;border-top:1px solid var(--line);color:var(--muted);font-size:.875rem}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IncidentStatus, MaintenanceStatus};
    use crate::testutil::{NOW, component, incident, maintenance, snapshot, update};
    use crate::uptime::{StatusChange, uptime_history};
    use time::macros::datetime;

    fn render(snap: &Snapshot, uptime: &HashMap<String, UptimeHistory>) -> String {
        render_page(&PageView { snapshot: snap, uptime, now: NOW, feed_url: Some("/history.atom") })
    }

    #[test]
    fn operator_strings_are_escaped_everywhere() {
        let evil = "<script>alert('x')</script>";
        let mut snap = snapshot();
        snap.page.name = evil.into();
        let mut c = component("c1", ComponentStatus::MajorOutage);
        c.name = evil.into();
        c.description = Some(evil.into());
        let mut g = component("g1", ComponentStatus::Operational);
        g.group = true;
        g.name = evil.into();
        let mut child = component("c2", ComponentStatus::Operational);
        child.group_id = Some("g1".into());
        child.name = evil.into();
        snap.components = vec![c, g, child];
        let mut i = incident("i1", evil, IncidentStatus::Investigating, Impact::Critical);
        i.started_at = NOW - Duration::hours(1);
        i.shortlink = "javascript:alert(1)".into();
        i.component_ids = vec!["c1".into()];
        i.incident_updates = vec![update("u1", IncidentStatus::Investigating, evil, NOW)];
        snap.incidents = vec![i];
        let mut m = maintenance("m1", MaintenanceStatus::Scheduled);
        m.name = evil.into();
        snap.scheduled_maintenances = vec![m];
        let uptime = HashMap::from([
            ("c1".to_owned(), uptime_history(crate::testutil::T, &[], NOW)),
            ("c2".to_owned(), uptime_history(crate::testutil::T, &[], NOW)),
        ]);

        let html = render(&snap, &uptime);
        assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
        assert!(!html.contains("javascript:"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        // The incident name reaches the day tooltip escaped as well.
        assert!(html.contains("<title>May 10, 2024 · 100.00% uptime · &lt;script&gt;"));
    }

    #[test]
    fn page_is_self_contained_and_responsive() {
        let mut snap = snapshot();
        snap.components = vec![component("c1", ComponentStatus::Operational)];
        let html = render(&snap, &HashMap::new());
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
        for external in ["<script", "src=", "@import", "url(", "<link rel=\"stylesheet\"", "@font-face"] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(html.contains("<p class=\"banner ok\" role=\"status\">All Systems Operational</p>"));
        assert!(html.contains("href=\"/history.atom\""));
    }

    #[test]
    fn uptime_bar_has_one_rect_per_day_coloured_by_the_worst_status() {
        let mut snap = snapshot();
        snap.components = vec![component("c1", ComponentStatus::Operational)];
        let mut i = incident("i1", "Database down", IncidentStatus::Resolved, Impact::Major);
        i.started_at = datetime!(2024-05-05 22:00 UTC);
        i.created_at = i.started_at;
        i.resolved_at = Some(datetime!(2024-05-06 03:00 UTC));
        i.component_ids = vec!["c1".into()];
        snap.incidents = vec![i];
        let changes = [
            StatusChange { at: datetime!(2024-05-05 22:00 UTC), status: ComponentStatus::MajorOutage },
            StatusChange { at: datetime!(2024-05-06 03:00 UTC), status: ComponentStatus::Operational },
        ];
        let since = datetime!(2024-03-01 0:00 UTC);
        let uptime = HashMap::from([("c1".to_owned(), uptime_history(since, &changes, NOW))]);
        let html = render(&snap, &uptime);

        assert_eq!(html.matches("<rect ").count(), 90);
        assert!(html.contains("class=\"critical\"><title>May 5, 2024 · 91.67% uptime · Database down</title>"));
        assert!(html.contains("class=\"critical\"><title>May 6, 2024 · 87.50% uptime · Database down</title>"));
        assert!(html.contains("class=\"ok\"><title>May 7, 2024 · 100.00% uptime</title>"));
        assert!(html.contains("class=\"nodata\"><title>Feb 29, 2024 · no data</title>"));
    }

    #[test]
    fn showcase_off_and_hidden_components_get_no_bar_or_row() {
        let mut snap = snapshot();
        let mut quiet = component("c1", ComponentStatus::Operational);
        quiet.showcase = false;
        let mut hidden = component("c2", ComponentStatus::Operational);
        hidden.only_show_if_degraded = true;
        hidden.name = "Hidden one".into();
        snap.components = vec![quiet, hidden];
        let uptime = HashMap::from([
            ("c1".to_owned(), uptime_history(crate::testutil::T, &[], NOW)),
            ("c2".to_owned(), uptime_history(crate::testutil::T, &[], NOW)),
        ]);
        let html = render(&snap, &uptime);
        assert_eq!(html.matches("<svg").count(), 0);
        assert!(html.contains("Component c1"));
        assert!(!html.contains("Hidden one"));

        snap.components[1].status = ComponentStatus::PartialOutage;
        assert!(render(&snap, &uptime).contains("Hidden one"));
    }

    #[test]
    fn sections_for_active_past_and_upcoming_work() {
        let mut snap = snapshot();
        let mut open = incident("i1", "Slow chat replies", IncidentStatus::Identified, Impact::Minor);
        open.started_at = NOW - Duration::hours(2);
        open.incident_updates = vec![
            update("u1", IncidentStatus::Investigating, "Looking into it.", NOW - Duration::hours(2)),
            update("u2", IncidentStatus::Identified, "Found it.\nFixing.", NOW - Duration::hours(1)),
        ];
        let mut old = incident("i2", "Login errors", IncidentStatus::Resolved, Impact::Major);
        old.started_at = NOW - Duration::days(3);
        let mut ancient = incident("i3", "Long ago", IncidentStatus::Resolved, Impact::Major);
        ancient.started_at = NOW - Duration::days(30);
        snap.incidents = vec![open, old, ancient];
        snap.scheduled_maintenances = vec![
            maintenance("m1", MaintenanceStatus::Scheduled),
            maintenance("m2", MaintenanceStatus::InProgress),
            maintenance("m3", MaintenanceStatus::Completed),
        ];
        let html = render(&snap, &HashMap::new());

        let active = &html[html.find("<section class=\"active\"").unwrap()..];
        let active = &active[..active.find("</section>").unwrap()];
        assert!(active.contains("Slow chat replies") && active.contains("Maintenance m2"));
        assert!(!active.contains("Login errors"));
        // Newest update first, line breaks kept by CSS rather than rewritten.
        assert!(active.find("Found it.\nFixing.").unwrap() < active.find("Looking into it.").unwrap());

        let upcoming = &html[html.find("id=\"upcoming\"").unwrap()..];
        let upcoming = &upcoming[..upcoming.find("</section>").unwrap()];
        assert!(upcoming.contains("Maintenance m1"));
        assert!(upcoming.contains("Scheduled for May 12, 2024 02:00 UTC – May 12, 2024 04:00 UTC"));
        assert!(!upcoming.contains("Maintenance m3"));

        let past = &html[html.find("id=\"past\"").unwrap()..];
        assert_eq!(past.matches("<h3 class=\"day\">").count(), PAST_INCIDENT_DAYS);
        assert!(past.contains("<h3 class=\"day\">May 7, 2024</h3>\n<article class=\"notice major\"><h2><a href=\"https://status.example.com/incidents/i2\">Login errors</a>"));
        assert!(!past.contains("Long ago"));
        assert!(past.contains("No incidents reported."));
        assert!(html.contains("<p class=\"banner minor\" role=\"status\">Minor Service Outage</p>"));
    }

    #[test]
    fn percent_never_rounds_up_to_perfect() {
        assert_eq!(format_percent(100.0), "100.00%");
        assert_eq!(format_percent(99.9999), "99.99%");
        assert_eq!(format_percent(91.666), "91.67%");
        assert_eq!(format_percent(0.0), "0.00%");
    }
}
