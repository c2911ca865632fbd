//! An Atom (RFC 4287) feed of incidents, for feed readers and chat integrations.
//!
//! One entry per incident, newest activity first. An entry's `updated` is the time of its
//! latest update (or the incident's `updated_at` if it has none), its link is the
//! incident's `shortlink`, and its content lists every update, newest first, as HTML.
//! Entry ids are `tag:` URIs (RFC 4151) built from the page's host, the incident's creation
//! day and its id, so they never change when the incident is renamed or updated.

use crate::escape;
use crate::model::{Incident, Snapshot};
use crate::timestamp;

/// How many incidents the feed holds.
pub const FEED_ENTRIES: usize = 50;

/// The feed for `snapshot`, served at `self_url` (which also becomes the feed's id).
pub fn atom_feed(snapshot: &Snapshot, self_url: &str) -> String {
    let page = &snapshot.page;
    let mut entries: Vec<(&Incident, time::OffsetDateTime)> =
        snapshot.incidents.iter().map(|i| (i, last_update(i))).collect();
    entries.sort_by_key(|(_, updated)| std::cmp::Reverse(*updated));
    entries.truncate(FEED_ENTRIES);

    let feed_updated = entries.iter().map(|(_, u)| *u).fold(page.updated_at, Ord::max);
    let authority = tag_authority(&page.url);

    let mut out = String::with_capacity(1024 + entries.len() * 1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en\">\n");
    element(&mut out, "  ", "id", self_url);
    element(&mut out, "  ", "title", &format!("{} - Incident History", page.name));
    element(&mut out, "  ", "updated", &timestamp::atom(feed_updated));
    link(&mut out, "  ", "alternate", "text/html", &page.url);
    link(&mut out, "  ", "self", "application/atom+xml", self_url);
    out.push_str("  <author>\n");
    element(&mut out, "    ", "name", &page.name);
    out.push_str("  </author>\n");

    for (incident, updated) in entries {
        out.push_str("  <entry>\n");
        let id = format!(
            "tag:{authority},{}:incident:{}",
            incident.created_at.to_offset(time::UtcOffset::UTC).date(),
            escape::uri_component(&incident.id)
        );
        element(&mut out, "    ", "id", &id);
        element(&mut out, "    ", "title", &incident.name);
        element(&mut out, "    ", "published", &timestamp::atom(incident.created_at));
        element(&mut out, "    ", "updated", &timestamp::atom(updated));
        let href = if incident.shortlink.is_empty() { &page.url } else { &incident.shortlink };
        link(&mut out, "    ", "alternate", "text/html", href);
        out.push_str("    <content type=\"html\">");
        escape::push_text(&mut out, &content_html(incident));
        out.push_str("</content>\n");
        out.push_str("  </entry>\n");
    }
    out.push_str("</feed>\n");
    out
}

fn last_update(incident: &Incident) -> time::OffsetDateTime {
    incident.incident_updates.iter().map(|u| u.display_at).max().unwrap_or(incident.updated_at)
}

/// The updates as HTML, newest first; the caller escapes the whole for XML.
fn content_html(incident: &Incident) -> String {
    let mut updates: Vec<_> = incident.incident_updates.iter().collect();
    updates.sort_by_key(|u| std::cmp::Reverse(u.display_at));
    let mut html = String::new();
    for u in updates {
        html.push_str("<p><small>");
        html.push_str(&timestamp::human(u.display_at));
        html.push_str("</small><br><strong>");
        html.push_str(u.status.label());
        html.push_str("</strong> - ");
        html.push_str(&escape::text(&u.body).replace('\n', "<br>"));
        html.push_str("</p>");
    }
    html
}

/// The host of `url`, as the authority of a `tag:` URI; a URL without one falls back to a
/// name under the reserved `.invalid` TLD so ids stay well-formed.
fn tag_authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    let host = host.split(':').next().unwrap_or("");
    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        host.to_ascii_lowercase()
    } else {
        "status-page.invalid".to_owned()
    }
}

fn element(out: &mut String, indent: &str, name: &str, text: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape::push_text(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn link(out: &mut String, indent: &str, rel: &str, media_type: &str, href: &str) {
    out.push_str(indent);
    out.push_str("<link rel=\"");
    out.push_str(rel);
    out.push_str("\" type=\"");
    out.push_str(media_type);
    out.push_str("\" href=\"");
    escape::push_text(out, href);
    out.push_str("\"/>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{incident, snapshot, update};
    use crate::{Impact, IncidentStatus};
    use time::macros::datetime;

    fn well_formed(xml: &str) -> Result<usize, String> {
        crate::testutil::xml_element_count(xml)
    }

    #[test]
    fn feed_is_well_formed_and_orders_by_latest_update() {
        let mut snap = snapshot();
        let mut old = incident("old", "Old incident", IncidentStatus::Resolved, Impact::Minor);
        old.created_at = datetime!(2024-05-01 10:00 UTC);
        old.incident_updates = vec![update("u1", IncidentStatus::Resolved, "Fixed.", datetime!(2024-05-09 10:00 UTC))];
        let mut new = incident("new", "New incident", IncidentStatus::Investigating, Impact::Major);
        new.created_at = datetime!(2024-05-08 10:00 UTC);
        new.incident_updates =
            vec![update("u2", IncidentStatus::Investigating, "Looking.", datetime!(2024-05-08 10:00 UTC))];
        snap.incidents = vec![new, old];
        let xml = atom_feed(&snap, "https://status.example.com/history.atom");
        assert!(well_formed(&xml).is_ok(), "{xml}");
        // "old" had the later update, so it comes first.
        let first = xml.find("<title>Old incident</title>").unwrap();
        let second = xml.find("<title>New incident</title>").unwrap();
        assert!(first < second);
        assert!(xml.contains("<updated>2024-05-09T10:00:00Z</updated>"));
        assert!(xml.contains("<id>tag:status.example.com,2024-05-01:incident:old</id>"));
    }

    #[test]
    fn operator_text_is_escaped_twice_in_content_and_once_elsewhere() {
        let mut snap = snapshot();
        let mut i = incident("x", "<script>alert(1)</script>", IncidentStatus::Investigating, Impact::Minor);
        i.incident_updates = vec![update(
            "u",
            IncidentStatus::Investigating,
            "a < b & \"c\"\nline two\u{0}",
            datetime!(2024-05-08 10:00 UTC),
        )];
        snap.incidents = vec![i];
        let xml = atom_feed(&snap, "https://status.example.com/history.atom?a=1&b=2");
        assert!(well_formed(&xml).is_ok(), "{xml}");
        assert!(!xml.contains("<script>"));
        assert!(xml.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>"));
        // In the HTML content: the body is escaped as HTML, then the HTML as XML.
        assert!(xml.contains("a &amp;lt; b &amp;amp; &amp;quot;c&amp;quot;&lt;br&gt;line two"));
        assert!(xml.contains("href=\"https://status.example.com/history.atom?a=1&amp;b=2\""));
    }

    #[test]
    fn empty_page_still_yields_a_valid_feed() {
        let xml = atom_feed(&snapshot(), "https://status.example.com/history.atom");
        assert!(well_formed(&xml).is_ok(), "{xml}");
        assert!(xml.contains("<updated>2024-05-10T11:00:00Z</updated>"));
        assert!(!xml.contains("<entry>"));
    }

    #[test]
    fn entries_are_capped() {
        let mut snap = snapshot();
        snap.incidents = (0..FEED_ENTRIES + 5)
            .map(|n| incident(&n.to_string(), "i", IncidentStatus::Resolved, Impact::None))
            .collect();
        let xml = atom_feed(&snap, "https://status.example.com/history.atom");
        assert_eq!(xml.matches("<entry>").count(), FEED_ENTRIES);
    }

    #[test]
    fn tag_authority_takes_the_host() {
        assert_eq!(tag_authority("https://Status.Example.com:8443/x?y"), "status.example.com");
        assert_eq!(tag_authority("http://user@host.example/"), "host.example");
        assert_eq!(tag_authority(""), "status-page.invalid");
        assert_eq!(tag_authority("https://exa mple/"), "status-page.invalid");
    }
}
