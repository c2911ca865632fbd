//! Phone numbers for the drill's sign-ups: a number range is written as a template with
//! an `x` for each digit that varies (`"+370 644 xxxxx"`), and the n-th number of a list
//! of ranges takes the ranges in turn. The gateway refuses numbers that are not valid
//! for their region (libphonenumber's metadata, through the `phonenumber` crate), so a
//! scenario's ranges are checked with the same metadata before a drill starts.

/// Digits one template may leave free: 10^9 numbers is more than any drill sends.
const MAX_FREE_DIGITS: u32 = 9;
/// As the gateway: longer input is refused before it is parsed.
const MAX_TEMPLATE_CHARS: usize = 32;

/// How many digits `template` leaves free.
fn free_digits(template: &str) -> u32 {
    template.chars().filter(|&c| c == 'x').count() as u32
}

/// `template` with its free digits set to `value` (modulo what they can hold), in E.164
/// form: `+` and digits.
pub fn fill(template: &str, value: u64) -> String {
    let free = free_digits(template).min(MAX_FREE_DIGITS);
    let value = value % 10u64.pow(free);
    let digits = format!("{value:0width$}", width = free as usize);
    let mut digits = digits.chars();
    template
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == 'x' { digits.next().unwrap_or('0') } else { c })
        .collect()
}

/// The `n`-th number of `ranges`: the ranges in turn, each counting up. Unique for as
/// long as `n` is below [`capacity`].
pub fn nth(ranges: &[String], n: u64) -> String {
    if ranges.is_empty() {
        return String::new();
    }
    let k = ranges.len() as u64;
    fill(&ranges[(n % k) as usize], n / k)
}

/// How many distinct numbers [`nth`] gives before it repeats one.
pub fn capacity(ranges: &[String]) -> u64 {
    let smallest = ranges.iter().map(|t| 10u64.pow(free_digits(t).min(MAX_FREE_DIGITS))).min().unwrap_or(0);
    smallest.saturating_mul(ranges.len() as u64)
}

/// The region (ISO 3166 alpha-2) of `number`, when it is a valid phone number as the
/// gateway judges it.
pub fn region(number: &str) -> Option<String> {
    let parsed = phonenumber::parse(None, number).ok()?;
    if !phonenumber::is_valid(&parsed) {
        return None;
    }
    parsed.country().id().map(|id| id.as_ref().to_owned())
}

/// The region of a template's numbers (they all share one).
pub fn range_region(template: &str) -> Option<String> {
    region(&fill(template, 0))
}

/// What is wrong with `ranges` when at least `needed` distinct numbers are drawn from
/// them, each problem starting with the index it is about (`[1]: …`). No ranges is no
/// problem: phone numbers are not used then.
pub fn problems(ranges: &[String], needed: u64) -> Vec<String> {
    let mut out = Vec::new();
    if ranges.is_empty() {
        return out;
    }
    for (i, template) in ranges.iter().enumerate() {
        let free = free_digits(template);
        if !template.starts_with('+') {
            out.push(format!("[{i}]: {template:?} must start with + and the country code"));
            continue;
        }
        if template.chars().count() > MAX_TEMPLATE_CHARS
            || !template[1..].chars().all(|c| c.is_ascii_digit() || c == ' ' || c == 'x')
        {
            out.push(format!("[{i}]: {template:?} may hold only digits, spaces and x, at most 32 characters"));
            continue;
        }
        if !(1..=MAX_FREE_DIGITS).contains(&free) {
            out.push(format!("[{i}]: {template:?} needs 1 to {MAX_FREE_DIGITS} x (the digits that vary)"));
            continue;
        }
        // The lowest, the highest and a few numbers in between must all be valid, and
        // of one region.
        let top = 10u64.pow(free) - 1;
        let samples = [0, top, top / 2, top / 3, top / 7 * 5, top / 11 * 3];
        let regions: Vec<Option<String>> = samples.iter().map(|&v| region(&fill(template, v))).collect();
        match regions.iter().position(Option::is_none) {
            Some(bad) => out.push(format!(
                "[{i}]: {template:?} gives numbers that are not valid phone numbers, e.g. {}",
                fill(template, samples[bad])
            )),
            None if regions.windows(2).any(|w| w[0] != w[1]) => {
                out.push(format!("[{i}]: {template:?} spans more than one region"))
            }
            None => {}
        }
    }
    if out.is_empty() && capacity(ranges) < needed {
        out.push(format!(": {} distinct numbers, fewer than the {needed} needed: add ranges or x", capacity(ranges)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_fill_the_free_digits_and_take_the_ranges_in_turn() {
        assert_eq!(fill("+44 7400 1xxxxx", 42), "+447400100042");
        assert_eq!(fill("+44 7400 1xxxxx", 1_000_042), "+447400100042", "modulo what the digits hold");
        let r = ranges(&["+44 7400 1xxxxx", "+33 6 12 xx xx xx"]);
        assert_eq!(nth(&r, 0), "+447400100000");
        assert_eq!(nth(&r, 1), "+33612000000");
        assert_eq!(nth(&r, 3), "+33612000001");
        assert_eq!(capacity(&r), 200_000);
        let all: std::collections::HashSet<String> = (0..1000).map(|n| nth(&r, n)).collect();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn ranges_are_checked_with_the_gateways_metadata() {
        assert_eq!(range_region("+44 7400 1xxxxx").as_deref(), Some("GB"));
        assert_eq!(range_region("+33 6 12 xx xx xx").as_deref(), Some("FR"));
        assert!(problems(&ranges(&["+44 7400 1xxxxx"]), 100_000).is_empty());
        let p = problems(&ranges(&["+44 7400 1xxxxx"]), 100_001);
        assert!(p.len() == 1 && p[0].contains("fewer than the 100001 needed"), "{p:?}");
        let p = problems(&ranges(&["44 7400", "+44 7400 1", "+44 7400 1xxxxxxx", "+1 000 xxx xxxx", "+4a xx"]), 1);
        let got: Vec<&str> = p.iter().map(|p| &p[..3]).collect();
        assert_eq!(got, ["[0]", "[1]", "[2]", "[3]", "[4]"], "{p:?}");
        assert!(p[2].contains("not valid") && p[2].contains("+44740010000000"), "{p:?}");
    }
}
