//! Hysteresis for a measured component status: one bad sample does not turn the
//! page yellow and one good sample does not turn it green again.
//!
//! A status worsens after `degrade_after` consecutive samples worse than it, and
//! improves after `recover_after` consecutive samples better than it. It moves to
//! the level the whole streak held: the mildest of the worse samples, or the worst
//! of the better ones. A sample equal to the current status ends any streak.

use status::ComponentStatus;

/// How many consecutive samples it takes to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub degrade_after: u32,
    pub recover_after: u32,
}

/// The smoothed status of one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    current: ComponentStatus,
    /// The level a streak would move to, and how long the streak is (0: none).
    candidate: ComponentStatus,
    streak: u32,
}

impl Hysteresis {
    pub fn new(current: ComponentStatus) -> Hysteresis {
        Hysteresis { current, candidate: current, streak: 0 }
    }

    pub fn current(&self) -> ComponentStatus {
        self.current
    }

    /// Feed one sample; returns the (possibly changed) status.
    pub fn step(&mut self, sample: ComponentStatus, thresholds: Thresholds) -> ComponentStatus {
        if sample == self.current {
            self.streak = 0;
            return self.current;
        }
        let worse = sample > self.current;
        let same_direction = self.streak > 0 && (self.candidate > self.current) == worse;
        if same_direction {
            self.streak += 1;
            self.candidate = if worse { self.candidate.min(sample) } else { self.candidate.max(sample) };
        } else {
            self.streak = 1;
            self.candidate = sample;
        }
        let needed = if worse { thresholds.degrade_after } else { thresholds.recover_after };
        if self.streak >= needed.max(1) {
            self.current = self.candidate;
            self.streak = 0;
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComponentStatus::*;

    const T: Thresholds = Thresholds { degrade_after: 3, recover_after: 5 };

    fn feed(h: &mut Hysteresis, samples: &[ComponentStatus]) -> Vec<ComponentStatus> {
        samples.iter().map(|s| h.step(*s, T)).collect()
    }

    #[test]
    fn degrades_after_n_bad_samples_and_recovers_after_m_good_ones() {
        let mut h = Hysteresis::new(Operational);
        assert_eq!(feed(&mut h, &[MajorOutage, MajorOutage]), [Operational, Operational]);
        assert_eq!(h.step(MajorOutage, T), MajorOutage, "the third bad sample moves it");
        assert_eq!(feed(&mut h, &[Operational; 4]), [MajorOutage; 4]);
        assert_eq!(h.step(Operational, T), Operational, "the fifth good sample moves it back");
    }

    #[test]
    fn flapping_never_moves_it() {
        let mut h = Hysteresis::new(Operational);
        for _ in 0..100 {
            assert_eq!(feed(&mut h, &[MajorOutage, MajorOutage, Operational]), [Operational; 3]);
        }
        let mut h = Hysteresis::new(MajorOutage);
        for _ in 0..100 {
            assert_eq!(
                feed(&mut h, &[Operational, Operational, Operational, Operational, MajorOutage]),
                [MajorOutage; 5]
            );
        }
    }

    #[test]
    fn moves_to_the_level_the_whole_streak_held() {
        let mut h = Hysteresis::new(Operational);
        assert_eq!(feed(&mut h, &[MajorOutage, DegradedPerformance, PartialOutage]).last(), Some(&DegradedPerformance));
        // Recovery from a major outage through mixed better samples stops at the worst of them.
        let mut h = Hysteresis::new(MajorOutage);
        let samples = [Operational, PartialOutage, Operational, DegradedPerformance, Operational];
        assert_eq!(feed(&mut h, &samples).last(), Some(&PartialOutage));
    }

    #[test]
    fn a_sample_at_the_current_level_or_the_other_way_resets_the_streak() {
        let mut h = Hysteresis::new(DegradedPerformance);
        // Two worse, one equal, two worse: never three in a row.
        assert_eq!(
            feed(&mut h, &[MajorOutage, MajorOutage, DegradedPerformance, MajorOutage, MajorOutage]),
            [DegradedPerformance; 5]
        );
        // Two worse then one better: the better one starts a recovery streak instead.
        let mut h = Hysteresis::new(DegradedPerformance);
        feed(&mut h, &[MajorOutage, MajorOutage, Operational]);
        assert_eq!(h.step(MajorOutage, T), DegradedPerformance);
        assert_eq!(h.current(), DegradedPerformance);
    }

    #[test]
    fn thresholds_of_one_follow_every_sample() {
        let one = Thresholds { degrade_after: 1, recover_after: 1 };
        let mut h = Hysteresis::new(Operational);
        for s in [MajorOutage, Operational, PartialOutage, UnderMaintenance] {
            assert_eq!(h.step(s, one), s);
        }
    }
}
