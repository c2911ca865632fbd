//! A small SVG badge, "status | operational", for READMEs and dashboards.

use crate::escape;
use crate::overall::{Indicator, OverallStatus};

const LABEL: &str = "status";

/// The badge for `status`: a grey "status" half and a half coloured by the indicator.
///
/// The right half reads `operational`, `maintenance`, `degraded` (minor), `partial outage`
/// (major) or `major outage` (critical); the full description is the SVG's title. Text
/// widths are pinned with `textLength`, so the badge looks the same whatever font the
/// viewer falls back to.
pub fn badge_svg(status: &OverallStatus) -> String {
    let (value, colour) = match status.indicator {
        Indicator::None => ("operational", "#2fcc66"),
        Indicator::Maintenance => ("maintenance", "#3498db"),
        Indicator::Minor => ("degraded", "#d4a20b"),
        Indicator::Major => ("partial outage", "#e67e22"),
        Indicator::Critical => ("major outage", "#e74c3c"),
    };
    let label_text = text_width(LABEL);
    let value_text = text_width(value);
    let label_w = label_text + 12;
    let value_w = value_text + 12;
    let total = label_w + value_w;
    let title = escape::text(&format!("{LABEL}: {value} ({})", status.description));
    let label_x = label_w / 2;
    let value_x = label_w + value_w / 2;
    format!(
        concat!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" ",
            "role=\"img\" aria-label=\"{title}\" viewBox=\"0 0 {total} 20\">",
            "<title>{title}</title>",
            "<clipPath id=\"corners\"><rect width=\"{total}\" height=\"20\" rx=\"3\"/></clipPath>",
            "<g clip-path=\"url(#corners)\">",
            "<rect width=\"{label_w}\" height=\"20\" fill=\"#555\"/>",
            "<rect x=\"{label_w}\" width=\"{value_w}\" height=\"20\" fill=\"{colour}\"/>",
            "</g>",
            "<g font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\" text-anchor=\"middle\">",
            // A faint shadow one pixel down keeps white text legible on the lighter colours.
            "<text x=\"{label_x}\" y=\"15\" fill=\"#000\" fill-opacity=\".3\" textLength=\"{label_text}\">{label}</text>",
            "<text x=\"{label_x}\" y=\"14\" fill=\"#fff\" textLength=\"{label_text}\">{label}</text>",
            "<text x=\"{value_x}\" y=\"15\" fill=\"#000\" fill-opacity=\".3\" textLength=\"{value_text}\">{value}</text>",
            "<text x=\"{value_x}\" y=\"14\" fill=\"#fff\" textLength=\"{value_text}\">{value}</text>",
            "</g></svg>"
        ),
        total = total,
        title = title,
        label_w = label_w,
        value_w = value_w,
        colour = colour,
        label_x = label_x,
        value_x = value_x,
        label_text = label_text,
        value_text = value_text,
        label = LABEL,
        value = value,
    )
}

/// Approximate advance width of `s` in 11px Verdana: about 7px per character.
fn text_width(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX / 8) * 7
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::xml_element_count;

    fn status(indicator: Indicator) -> OverallStatus {
        OverallStatus { indicator, description: "All <Systems> & \"Operational\"" }
    }

    #[test]
    fn every_badge_is_well_formed_xml() {
        for i in Indicator::ALL {
            let svg = badge_svg(&status(*i));
            let elements = xml_element_count(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
            assert!(elements >= 10, "{svg}");
            assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        }
    }

    #[test]
    fn colour_and_text_follow_the_indicator() {
        let ok = badge_svg(&status(Indicator::None));
        assert!(ok.contains(">operational</text>") && ok.contains("#2fcc66"));
        let down = badge_svg(&status(Indicator::Critical));
        assert!(down.contains(">major outage</text>") && down.contains("#e74c3c"));
        assert!(badge_svg(&status(Indicator::Maintenance)).contains("#3498db"));
    }

    #[test]
    fn description_is_escaped_in_the_title() {
        let svg = badge_svg(&status(Indicator::None));
        assert!(svg.contains("All &lt;Systems&gt; &amp; &quot;Operational&quot;"));
    }

    #[test]
    fn width_grows_with_the_text() {
        let w = |i| {
            let svg = badge_svg(&status(i));
            let start = svg.find("width=\"").unwrap() + 7;
            svg[start..].split('"').next().unwrap().parse::<u32>().unwrap()
        };
        assert!(w(Indicator::Major) > w(Indicator::Minor));
    }
}
