//! Escaping operator-provided text for HTML and XML (Atom, SVG).

use std::fmt::Write as _;

/// Escapes text for an HTML/XML text node or a quoted attribute value.
///
/// Also drops the control characters XML 1.0 forbids (everything below U+0020 except tab,
/// newline and carriage return): a stray one in an incident body would make the Atom feed
/// and the badge ill-formed, and a feed reader rejects the whole document for it.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_text(&mut out, s);
    out
}

/// [`text`], appending to `out`.
pub(crate) fn push_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            // U+FFFE and U+FFFF are not XML characters either.
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for an id placed in a URI.
pub(crate) fn uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `url` if it is safe to put in an `href` on the page: `http(s)://` or a path on this
/// site. Anything else — notably `javascript:` and `data:` — is refused, because an
/// operator's typo or a compromised admin account must not run script on the status page.
pub(crate) fn safe_href(url: &str) -> Option<&str> {
    let lower = url.trim_start().get(..8).unwrap_or(url).to_ascii_lowercase();
    let ok = lower.starts_with("https://")
        || lower.starts_with("http://")
        || (url.starts_with('/') && !url.starts_with("//"));
    ok.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            text(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn drops_characters_xml_forbids_but_keeps_line_breaks() {
        assert_eq!(text("a\u{0}b\u{1b}c\td\ne\rf\u{FFFF}"), "abc\td\ne\rf");
    }

    #[test]
    fn safe_href_allows_web_links_and_local_paths_only() {
        assert_eq!(safe_href("https://x.example/a"), Some("https://x.example/a"));
        assert_eq!(safe_href("HTTP://x.example"), Some("HTTP://x.example"));
        assert_eq!(safe_href("/incidents/1"), Some("/incidents/1"));
        assert_eq!(safe_href("javascript:alert(1)"), None);
        assert_eq!(safe_href(" JavaScript:alert(1)"), None);
        assert_eq!(safe_href("data:text/html,x"), None);
        assert_eq!(safe_href("//evil.example"), None);
        assert_eq!(safe_href(""), None);
    }

    #[test]
    fn uri_component_keeps_unreserved_only() {
        assert_eq!(uri_component("ab-9._~"), "ab-9._~");
        assert_eq!(uri_component("a b/é"), "a%20b%2F%C3%A9");
    }
}
