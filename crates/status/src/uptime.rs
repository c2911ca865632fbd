//! Daily uptime of one component over the last [`HISTORY_DAYS`] UTC days, from its log of
//! status changes.
//!
//! # Weighting
//!
//! A day's uptime is `100 × (1 − weighted downtime ÷ observed time)`, where each stretch of
//! time counts as downtime in proportion to [`downtime_weight`]:
//!
//! | status                 | weight | why                                                       |
//! |------------------------|--------|-----------------------------------------------------------|
//! | `major_outage`         | 1.0    | down for everyone                                         |
//! | `partial_outage`       | 0.3    | down for a subset; the weight Statuspage's uptime uses, so our numbers read like the ones users know |
//! | `degraded_performance` | 0.0    | slow, but requests are answered                           |
//! | `under_maintenance`    | 0.0    | planned and announced; counted as up time, not cut out of the day |
//! | `operational`          | 0.0    |                                                           |
//!
//! *Observed time* is the part of the day during which the component existed (from the
//! `since` passed in) and which is not in the future (before `now`). A day with none has
//! no data — not 100%. So today is measured up to `now`, and a stretch that spans midnight
//! is split at midnight between the two days.
//!
//! Each day also records the worst status seen during it (by [`ComponentStatus`]'s
//! severity order), which colours the day on the page: a one-minute major outage makes the
//! day red even though its uptime is 99.93%.

use time::{Date, Duration, OffsetDateTime, UtcOffset};

use crate::model::ComponentStatus;

/// How many days of history the page shows, today included.
pub const HISTORY_DAYS: usize = 90;

/// How much of each second in `status` counts as downtime, in `0.0..=1.0`.
pub fn downtime_weight(status: ComponentStatus) -> f64 {
    match status {
        ComponentStatus::MajorOutage => 1.0,
        ComponentStatus::PartialOutage => 0.3,
        ComponentStatus::DegradedPerformance | ComponentStatus::UnderMaintenance | ComponentStatus::Operational => 0.0,
    }
}

/// The component entered `status` at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub at: OffsetDateTime,
    pub status: ComponentStatus,
}

/// One UTC day of a component's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayUptime {
    pub date: Date,
    /// How much of the day is known: after the component existed and before `now`.
    pub observed: Duration,
    /// Weighted downtime within `observed`.
    pub downtime: Duration,
    /// The worst status held for any positive stretch of the day; `None` without data.
    pub worst: Option<ComponentStatus>,
}

impl DayUptime {
    /// Uptime in percent, `0.0..=100.0`; `None` when nothing of the day was observed.
    pub fn percent(&self) -> Option<f64> {
        percent(self.observed, self.downtime)
    }
}

/// [`HISTORY_DAYS`] consecutive days, oldest first; the last is today.
#[derive(Debug, Clone, PartialEq)]
pub struct UptimeHistory {
    pub days: Vec<DayUptime>,
}

impl UptimeHistory {
    /// Uptime over the whole history in percent, weighting each day by how much of it was
    /// observed; `None` when nothing was.
    pub fn percent(&self) -> Option<f64> {
        let (observed, downtime) =
            self.days.iter().fold((Duration::ZERO, Duration::ZERO), |(o, d), day| (o + day.observed, d + day.downtime));
        percent(observed, downtime)
    }

    /// The entry for `date`, if it is within the history.
    pub fn day(&self, date: Date) -> Option<&DayUptime> {
        self.days.iter().find(|d| d.date == date)
    }
}

fn percent(observed: Duration, downtime: Duration) -> Option<f64> {
    if observed <= Duration::ZERO {
        return None;
    }
    let up = 1.0 - downtime.as_seconds_f64() / observed.as_seconds_f64();
    // Clamped because float rounding of the weighted sums may stray past the bounds.
    Some((up * 100.0).clamp(0.0, 100.0))
}

/// The last [`HISTORY_DAYS`] UTC days (today last) of a component that has existed since
/// `since` and whose status changed as `changes` says.
///
/// `since` is usually the component's `created_at` (or the midnight of its `start_date`).
/// `changes` need not be sorted; of changes with the same instant the last one given wins.
/// The status at `since` is the latest change at or before it, or operational if there is
/// none, as a new component starts out. Changes at or after `now` are ignored.
pub fn uptime_history(since: OffsetDateTime, changes: &[StatusChange], now: OffsetDateTime) -> UptimeHistory {
    let now = now.to_offset(UtcOffset::UTC);
    let today = now.date();

    // Walk back from today; near `Date::MIN` there are fewer days, never a panic.
    let mut dates: Vec<Date> = std::iter::successors(Some(today), |d| d.previous_day()).take(HISTORY_DAYS).collect();
    dates.reverse();
    let first = dates[0];
    let mut days: Vec<DayUptime> = dates
        .into_iter()
        .map(|date| DayUptime { date, observed: Duration::ZERO, downtime: Duration::ZERO, worst: None })
        .collect();

    let start = since.max(midnight(first));
    if now <= start {
        return UptimeHistory { days };
    }

    let mut sorted: Vec<&StatusChange> = changes.iter().collect();
    sorted.sort_by_key(|c| c.at); // stable: among equal instants the last given stays last

    let mut status = sorted.iter().rev().find(|c| c.at <= start).map_or(ComponentStatus::Operational, |c| c.status);
    let mut from = start;
    for change in sorted.iter().filter(|c| c.at > start && c.at < now) {
        add_stretch(&mut days, first, from, change.at, status);
        from = change.at;
        status = change.status;
    }
    add_stretch(&mut days, first, from, now, status);

    UptimeHistory { days }
}

/// Adds `[from, to)` spent in `status`, split at each midnight, to the days it covers.
fn add_stretch(
    days: &mut [DayUptime],
    first: Date,
    mut from: OffsetDateTime,
    to: OffsetDateTime,
    status: ComponentStatus,
) {
    let weight = downtime_weight(status);
    // Days are UTC days whatever offset the instants carry.
    from = from.to_offset(UtcOffset::UTC);
    while from < to {
        let date = from.date();
        let chunk_end = date.next_day().map_or(to, |next| to.min(midnight(next)));
        let length = chunk_end - from;
        let index = usize::try_from((date - first).whole_days()).ok();
        // `from` lies in [midnight(first), now), so the index is always in range; the
        // guard only keeps a logic slip from becoming a panic on the status page.
        if let Some(day) = index.and_then(|i| days.get_mut(i)) {
            day.observed += length;
            day.downtime += length * weight;
            day.worst = day.worst.max(Some(status));
        }
        from = chunk_end;
    }
}

fn midnight(date: Date) -> OffsetDateTime {
    date.midnight().assume_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComponentStatus::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn change(at: OffsetDateTime, status: ComponentStatus) -> StatusChange {
        StatusChange { at, status }
    }

    const NOW: OffsetDateTime = datetime!(2024-05-10 12:00 UTC);

    /// A day of 2024.
    fn day(month: u8, day: u8) -> Date {
        let month = time::Month::try_from(month).expect("month");
        Date::from_calendar_date(2024, month, day).expect("date")
    }

    #[track_caller]
    fn assert_close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a percentage");
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn ninety_days_ending_today() {
        let h = uptime_history(datetime!(2020-01-01 0:00 UTC), &[], NOW);
        assert_eq!(h.days.len(), HISTORY_DAYS);
        assert_eq!(h.days.last().map(|d| d.date), Some(day(5, 10)));
        assert_eq!(h.days[0].date, day(2, 11));
        assert!(h.days.windows(2).all(|w| w[0].date.next_day() == Some(w[1].date)));
    }

    #[test]
    fn only_operational_is_full_uptime() {
        let h = uptime_history(datetime!(2020-01-01 0:00 UTC), &[], NOW);
        assert!(h.days.iter().all(|d| d.percent() == Some(100.0)));
        assert!(h.days.iter().all(|d| d.worst == Some(Operational)));
        assert_eq!(h.percent(), Some(100.0));
    }

    #[test]
    fn days_before_the_component_existed_have_no_data() {
        let since = datetime!(2024-05-08 18:00 UTC);
        let h = uptime_history(since, &[], NOW);
        let d7 = h.day(day(5, 7)).unwrap();
        assert_eq!((d7.percent(), d7.worst, d7.observed), (None, None, Duration::ZERO));
        // The creation day is observed from creation on.
        assert_eq!(h.day(day(5, 8)).unwrap().observed, Duration::hours(6));
        assert_eq!(h.days.iter().filter(|d| d.percent().is_none()).count(), HISTORY_DAYS - 3);
    }

    #[test]
    fn a_full_day_of_major_outage_is_zero() {
        let changes =
            [change(datetime!(2024-05-05 0:00 UTC), MajorOutage), change(datetime!(2024-05-06 0:00 UTC), Operational)];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        let d = h.day(day(5, 5)).unwrap();
        assert_eq!((d.percent(), d.worst), (Some(0.0), Some(MajorOutage)));
        assert_eq!(h.day(day(5, 6)).unwrap().percent(), Some(100.0));
        assert_eq!(h.day(day(5, 4)).unwrap().percent(), Some(100.0));
    }

    #[test]
    fn an_outage_spanning_midnight_is_split_between_the_days() {
        let changes = [
            change(datetime!(2024-05-05 22:00 UTC), MajorOutage),
            change(datetime!(2024-05-06 03:00 UTC), Operational),
        ];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        let d5 = h.day(day(5, 5)).unwrap();
        let d6 = h.day(day(5, 6)).unwrap();
        assert_eq!(d5.downtime, Duration::hours(2));
        assert_eq!(d6.downtime, Duration::hours(3));
        assert_close(d5.percent(), 100.0 * 22.0 / 24.0);
        assert_close(d6.percent(), 100.0 * 21.0 / 24.0);
        assert_eq!((d5.worst, d6.worst), (Some(MajorOutage), Some(MajorOutage)));
    }

    #[test]
    fn today_is_measured_up_to_now() {
        // Down since 06:00, still down at noon: half of the observed half-day.
        let changes = [change(datetime!(2024-05-10 06:00 UTC), MajorOutage)];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        let today = h.days.last().unwrap();
        assert_eq!(today.observed, Duration::hours(12));
        assert_eq!(today.percent(), Some(50.0));
    }

    #[test]
    fn partial_outage_weighs_three_tenths() {
        let changes = [
            change(datetime!(2024-05-05 0:00 UTC), PartialOutage),
            change(datetime!(2024-05-05 10:00 UTC), Operational),
        ];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        let d = h.day(day(5, 5)).unwrap();
        assert_eq!(d.downtime, Duration::hours(3));
        assert_eq!(d.percent(), Some(87.5));
    }

    #[test]
    fn maintenance_and_degradation_are_not_downtime_but_colour_the_day() {
        let changes = [
            change(datetime!(2024-05-05 01:00 UTC), UnderMaintenance),
            change(datetime!(2024-05-05 02:00 UTC), Operational),
            change(datetime!(2024-05-06 01:00 UTC), DegradedPerformance),
            change(datetime!(2024-05-06 02:00 UTC), Operational),
        ];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        let d5 = h.day(day(5, 5)).unwrap();
        let d6 = h.day(day(5, 6)).unwrap();
        assert_eq!((d5.percent(), d5.worst), (Some(100.0), Some(UnderMaintenance)));
        assert_eq!((d6.percent(), d6.worst), (Some(100.0), Some(DegradedPerformance)));
    }

    #[test]
    fn changes_are_sorted_and_the_state_before_the_window_carries_in() {
        // Given out of order; the outage began long before the 90-day window.
        let changes =
            [change(datetime!(2024-03-01 12:00 UTC), Operational), change(datetime!(2023-06-01 0:00 UTC), MajorOutage)];
        let h = uptime_history(datetime!(2023-01-01 0:00 UTC), &changes, NOW);
        assert_eq!(h.days[0].percent(), Some(0.0));
        let d = h.day(day(3, 1)).unwrap();
        assert_eq!(d.percent(), Some(50.0));
        assert_eq!(h.day(day(3, 2)).unwrap().percent(), Some(100.0));
    }

    #[test]
    fn the_last_of_simultaneous_changes_wins_and_an_instant_does_not_colour() {
        let t = datetime!(2024-05-05 12:00 UTC);
        let changes = [change(t, MajorOutage), change(t, Operational)];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        let d = h.day(day(5, 5)).unwrap();
        assert_eq!((d.percent(), d.worst), (Some(100.0), Some(Operational)));
    }

    #[test]
    fn future_changes_and_future_components_are_ignored() {
        let changes = [change(datetime!(2024-05-10 13:00 UTC), MajorOutage)];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        assert_eq!(h.days.last().unwrap().percent(), Some(100.0));

        let h = uptime_history(datetime!(2024-06-01 0:00 UTC), &[], NOW);
        assert!(h.days.iter().all(|d| d.percent().is_none()));
        assert_eq!(h.percent(), None);
    }

    #[test]
    fn overall_percent_weights_days_by_observed_time() {
        // 12h observed today, fully down; the day before fully up: 24 up of 36 observed.
        let since = datetime!(2024-05-09 0:00 UTC);
        let changes = [change(datetime!(2024-05-10 0:00 UTC), MajorOutage)];
        let h = uptime_history(since, &changes, NOW);
        assert_close(h.percent(), 100.0 * 24.0 / 36.0);
    }

    #[test]
    fn offsets_other_than_utc_use_utc_days() {
        // 23:00 at -02:00 is 01:00 UTC the next day.
        let changes = [change(datetime!(2024-05-04 23:00 -02:00), MajorOutage)];
        let h = uptime_history(datetime!(2024-01-01 0:00 UTC), &changes, NOW);
        assert_eq!(h.day(day(5, 4)).unwrap().percent(), Some(100.0));
        assert_eq!(h.day(day(5, 5)).unwrap().downtime, Duration::hours(23));
    }

    fn any_status() -> impl Strategy<Value = ComponentStatus> {
        prop::sample::select(ComponentStatus::ALL.to_vec())
    }

    /// Instants within ~120 days before NOW and a little after it, to second precision.
    fn any_instant() -> impl Strategy<Value = OffsetDateTime> {
        (-120i64 * 86_400..2 * 86_400).prop_map(|s| NOW + Duration::seconds(s))
    }

    proptest! {
        #[test]
        fn uptime_is_a_percentage_and_days_are_bounded(
            since in any_instant(),
            changes in prop::collection::vec((any_instant(), any_status()), 0..40),
            now_offset in -86_400i64..86_400,
        ) {
            let now = NOW + Duration::seconds(now_offset);
            let changes: Vec<_> = changes.into_iter().map(|(at, status)| change(at, status)).collect();
            let h = uptime_history(since, &changes, now);
            prop_assert_eq!(h.days.len(), HISTORY_DAYS);
            prop_assert_eq!(h.days.last().unwrap().date, now.date());
            let mut total = Duration::ZERO;
            for d in &h.days {
                prop_assert!(d.observed >= Duration::ZERO && d.observed <= Duration::DAY);
                prop_assert!(d.downtime >= Duration::ZERO && d.downtime <= d.observed);
                prop_assert_eq!(d.percent().is_some(), d.worst.is_some());
                if let Some(p) = d.percent() {
                    prop_assert!((0.0..=100.0).contains(&p), "{}", p);
                }
                total += d.observed;
            }
            if let Some(p) = h.percent() {
                prop_assert!((0.0..=100.0).contains(&p));
            }
            // Every observed second is accounted for exactly once.
            let start = since.max(midnight(h.days[0].date));
            prop_assert_eq!(total, (now - start).max(Duration::ZERO));
        }

        #[test]
        fn a_log_without_outages_is_always_full_uptime(
            since in any_instant(),
            changes in prop::collection::vec(
                (any_instant(), prop::sample::select(vec![Operational, UnderMaintenance, DegradedPerformance])),
                0..40,
            ),
        ) {
            let changes: Vec<_> = changes.into_iter().map(|(at, status)| change(at, status)).collect();
            let h = uptime_history(since, &changes, NOW);
            for d in &h.days {
                prop_assert!(d.percent().is_none() || d.percent() == Some(100.0));
            }
        }

        #[test]
        fn a_day_inside_a_major_outage_is_zero(
            day_back in 1i64..80,
            lead_in in 0i64..86_400 * 5,
            tail in 0i64..86_400 * 5,
            before in prop::collection::vec((any_instant(), any_status()), 0..10),
        ) {
            let day = NOW.date() - Duration::days(day_back);
            let down_from = midnight(day) - Duration::seconds(lead_in);
            let down_to = midnight(day) + Duration::DAY + Duration::seconds(tail);
            // Changes outside the outage may be anything; none fall inside it.
            let mut changes: Vec<_> = before
                .into_iter()
                .filter(|(at, _)| *at < down_from || *at >= down_to)
                .map(|(at, status)| change(at, status))
                .collect();
            changes.push(change(down_from, MajorOutage));
            changes.push(change(down_to, Operational));
            let h = uptime_history(datetime!(2023-01-01 0:00 UTC), &changes, NOW);
            let d = h.day(day).unwrap();
            prop_assert_eq!(d.percent(), Some(0.0));
            prop_assert_eq!(d.worst, Some(MajorOutage));
        }
    }
}
