//! Concurrent-request limits per account or key (how many inference streams one account may
//! hold open at once), in a [`BoundedTable`] so memory stays fixed.
//!
//! Eviction errs on the side of the client, like the rate limits: a source evicted while it
//! has requests in flight (only possible when a bucket's 8 slots are all busy) restarts from
//! zero, and its later releases are ignored or lower the fresh count early. Both let a
//! little more through than the limit, never less.

use std::sync::Arc;
use std::time::Duration;

use crate::table::{BoundedTable, Key, Slot};

/// In-flight count of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight(pub u32);

impl Slot for InFlight {
    fn retention(&self, _now: Duration) -> u64 {
        u64::from(self.0)
    }
}

/// In-flight counts for many sources.
pub type ConcurrencyTable = BoundedTable<InFlight>;

impl BoundedTable<InFlight> {
    /// Takes a slot if `key` has fewer than `limit` requests in flight. Pair every `true`
    /// with one [`Self::release`], or use [`acquire`] for a guard that does it on drop.
    pub fn try_acquire(&self, key: Key, limit: u32) -> bool {
        self.update(key, Duration::ZERO, |n| {
            let ok = n.0 < limit;
            if ok {
                n.0 += 1;
            }
            ok
        })
    }

    /// Gives back a slot taken by [`Self::try_acquire`].
    pub fn release(&self, key: Key) {
        self.update_existing(key, Duration::ZERO, |n| n.0 = n.0.saturating_sub(1));
    }

    /// Requests in flight for `key`.
    pub fn in_flight(&self, key: Key) -> u32 {
        self.get(key).map_or(0, |n| n.0)
    }
}

/// A slot held in a shared [`ConcurrencyTable`]; released when dropped, so a cancelled or
/// panicking request cannot leak it.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    table: Arc<ConcurrencyTable>,
    key: Key,
}

/// Takes a slot for `key` under `limit`, or `None` when it already has `limit` in flight
/// (answer 429 with `Retry-After: 1`).
pub fn acquire(table: &Arc<ConcurrencyTable>, key: Key, limit: u32) -> Option<ConcurrencyPermit> {
    table.try_acquire(key, limit).then(|| ConcurrencyPermit { table: Arc::clone(table), key })
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn permits_count_and_release_on_drop() {
        let table = Arc::new(ConcurrencyTable::new(1));
        let k = Key::account(1);
        let a = acquire(&table, k, 2);
        let b = acquire(&table, k, 2);
        assert!(a.is_some() && b.is_some());
        assert!(acquire(&table, k, 2).is_none());
        assert!(acquire(&table, Key::account(2), 2).is_some(), "other accounts unaffected");
        drop(a);
        assert_eq!(table.in_flight(k), 1);
        assert!(acquire(&table, k, 2).is_some());
        drop(b);
        assert_eq!(table.in_flight(k), 0);
        assert!(table.is_empty(), "idle accounts free their slot");
        table.release(k);
        assert_eq!(table.in_flight(k), 0, "extra releases are harmless");
    }

    proptest! {
        /// Against a plain counter per key (no eviction with ≤ 8 keys): the same answers,
        /// and the count never exceeds the limit.
        #[test]
        fn matches_a_counter_per_key(ops in proptest::collection::vec((0u64..8, any::<bool>()), 1..300), limit in 0u32..5) {
            let table = ConcurrencyTable::new(1);
            let mut model = [0u32; 8];
            for (key, take) in ops {
                let k = Key::account(key);
                let m = &mut model[key as usize];
                if take {
                    let want = *m < limit;
                    if want { *m += 1; }
                    prop_assert_eq!(table.try_acquire(k, limit), want);
                } else {
                    *m = m.saturating_sub(1);
                    table.release(k);
                }
                prop_assert_eq!(table.in_flight(k), *m);
                prop_assert!(*m <= limit);
            }
        }
    }
}
