//! Request rate limits for the whole instance (`limit_requests`): one leaky bucket per limit
//! and key, whichever worker a request lands on.
//!
//! A bucket is GCRA's one number, the theoretical arrival time (TAT): when the bucket would
//! be empty, in nanoseconds of `CLOCK_MONOTONIC` (the same clock in every process of the
//! machine). Counting a request is one compare-and-swap of the TAT, so a worker killed
//! between two instructions leaves a bucket counted or not, never half-counted, and there is
//! no lock to leave held.
//!
//! The table has a fixed number of slots ([`SLOTS`]), a key and a TAT each. A key's slot is
//! one of the [`WAYS`] slots of the bucket group its hash names; when none holds the key, it
//! takes a free one, else the one whose bucket emptied longest ago, else the one closest to
//! empty (whose key starts over, as with nginx evicting a zone's oldest node). Two keys with
//! the same 64-bit hash share a bucket; a key may take a second slot while another worker
//! takes its first at the same instant (the first one in the group is used from then on).
//! Both err by a request or so and are accepted.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Slots in the table: buckets of that many keys can be counted at once (1 MiB).
pub const SLOTS: usize = 65_536;
/// Slots a key may take (one group, two cache lines): the bound of every probe.
pub const WAYS: usize = 8;
/// Words in the region: a key and a TAT per slot.
pub const WORDS: usize = 2 * SLOTS;
/// How often a contended slot is looked for again before the last choice is used as it is.
const CLAIMS: usize = 4;

/// A rate: one request per `interval_nanos`, and `burst` more at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval_nanos: u64,
    pub burst: u32,
}

impl Rate {
    /// How far ahead of now a bucket's TAT may be when a request is let through (GCRA's τ).
    fn tolerance(self) -> u64 {
        self.interval_nanos.saturating_mul(u64::from(self.burst))
    }
}

/// What a bucket said of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate and burst, and counted: `ahead_nanos` is how long the requests
    /// counted before it take at the rate (0: none; nginx's `limit_req` without `nodelay`
    /// makes the request wait that long).
    Within { ahead_nanos: u64 },
    /// Over the burst, and not counted: the bucket lets a request through this many
    /// nanoseconds from now.
    Over { retry_nanos: u64 },
}

/// GCRA: the verdict on a request at `now` for a bucket whose TAT is `tat`, and the bucket's
/// new TAT if the request is counted.
pub fn decide(tat: u64, now: u64, rate: Rate) -> (Verdict, Option<u64>) {
    let start = tat.max(now);
    let ahead_nanos = start - now;
    let tolerance = rate.tolerance();
    if ahead_nanos > tolerance {
        let retry_nanos = ahead_nanos - tolerance;
        return (Verdict::Over { retry_nanos }, None);
    }
    let next = start.saturating_add(rate.interval_nanos);
    (Verdict::Within { ahead_nanos }, Some(next))
}

/// The table in the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Per slot: its key (0: free), then its TAT.
    pub(super) words: &'static [AtomicU64],
}

impl Rates {
    /// Counts a request of the bucket of `key` (a hash: see [`key_of`]) at `now` under
    /// `rate`, and says whether it may go.
    pub fn take(&self, key: u64, rate: Rate, now: u64) -> Verdict {
        let slot = self.slot_of(key.max(1), now);
        let tat = self.tat(slot);
        let mut seen = tat.load(SeqCst);
        loop {
            let (verdict, next) = decide(seen, now, rate);
            let Some(next) = next else {
                return verdict;
            };
            // Fails only when another process counted in between: decide again on its TAT.
            match tat.compare_exchange_weak(seen, next, SeqCst, SeqCst) {
                Ok(_) => return verdict,
                Err(current) => seen = current,
            }
        }
    }

    /// The slot of `key`, taken for it if it has none (see the module's notes).
    fn slot_of(&self, key: u64, now: u64) -> usize {
        let first = (key as usize % (SLOTS / WAYS)) * WAYS;
        let mut choice = first;
        for _ in 0..CLAIMS {
            // The best slot to take: free, then emptied longest ago, then closest to empty.
            let mut best: Option<(usize, u64, (u8, u64))> = None;
            for slot in first..first + WAYS {
                let held = self.key(slot).load(SeqCst);
                if held == key {
                    return slot;
                }
                let tat = self.tat(slot).load(SeqCst);
                let rank = match held {
                    0 => (0, 0),
                    _ if tat <= now => (1, tat),
                    _ => (2, tat),
                };
                if best.is_none_or(|(_, _, best)| rank < best) {
                    best = Some((slot, held, rank));
                }
            }
            let (slot, held, (class, tat)) = best.expect("a group has slots");
            choice = slot;
            if self.key(slot).compare_exchange(held, key, SeqCst, SeqCst).is_ok() {
                // A bucket that is not empty yet was another key's: this one starts empty
                // (unless that key's request counted on it in between).
                if class == 2 {
                    let _ = self.tat(slot).compare_exchange(tat, 0, SeqCst, SeqCst);
                }
                return slot;
            }
        }
        choice
    }

    fn key(&self, slot: usize) -> &AtomicU64 {
        &self.words[2 * slot]
    }

    fn tat(&self, slot: usize) -> &AtomicU64 {
        &self.words[2 * slot + 1]
    }

    /// Slots that hold a key (counted at some point and not freed since).
    pub fn in_use(&self) -> usize {
        (0..SLOTS)
            .filter(|&slot| self.key(slot).load(SeqCst) != 0)
            .count()
    }
}

/// The key of a bucket: `scope` (the limit's, seeded: see `Shared::limit_scope`) and the
/// value requests are limited by (an address, a header's value).
pub fn key_of(scope: u64, value: &[u8]) -> u64 {
    let hash = value
        .iter()
        .fold(scope, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    mix(hash)
}

/// A finaliser (MurmurHash3's): every bit of the FNV state moves the slot and the tag.
pub(super) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SECOND: u64 = 1000 * MS;

    /// 10 a second with a burst of `burst`.
    fn ten_a_second(burst: u32) -> Rate {
        Rate {
            interval_nanos: 100 * MS,
            burst,
        }
    }

    fn table() -> Rates {
        Rates {
            words: Box::leak((0..WORDS).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>()),
        }
    }

    #[test]
    fn gcra_lets_the_burst_through_at_once_then_one_per_interval() {
        let rate = ten_a_second(2);
        let now = 50 * SECOND;
        let mut tat = 0;
        let mut verdicts = Vec::new();
        for _ in 0..4 {
            let (verdict, next) = decide(tat, now, rate);
            tat = next.unwrap_or(tat);
            verdicts.push(verdict);
        }
        assert_eq!(
            verdicts,
            [
                Verdict::Within { ahead_nanos: 0 },
                Verdict::Within {
                    ahead_nanos: 100 * MS
                },
                Verdict::Within {
                    ahead_nanos: 200 * MS
                },
                Verdict::Over {
                    retry_nanos: 100 * MS
                },
            ]
        );
        assert_eq!(tat, now + 300 * MS, "the refused request is not counted");
        // 30 ms later it is still 70 ms early; at 100 ms one more goes.
        assert_eq!(
            decide(tat, now + 30 * MS, rate),
            (Verdict::Over { retry_nanos: 70 * MS }, None)
        );
        let (verdict, next) = decide(tat, now + 100 * MS, rate);
        assert_eq!(
            verdict,
            Verdict::Within {
                ahead_nanos: 200 * MS
            }
        );
        assert_eq!(next, Some(now + 400 * MS));
        // An idle bucket empties: long after, the whole burst again.
        assert_eq!(
            decide(tat, now + 10 * SECOND, rate).0,
            Verdict::Within { ahead_nanos: 0 }
        );
    }

    #[test]
    fn without_a_burst_requests_go_exactly_at_the_rate() {
        let rate = ten_a_second(0);
        let mut tat = 0;
        let mut let_through = 0;
        // One request every millisecond for ten seconds.
        for ms in 0..10_000u64 {
            let (verdict, next) = decide(tat, SECOND + ms * MS, rate);
            if let Verdict::Within { ahead_nanos } = verdict {
                assert_eq!(ahead_nanos, 0);
                let_through += 1;
            }
            tat = next.unwrap_or(tat);
        }
        assert_eq!(let_through, 100);
    }

    #[test]
    fn a_minute_rate_and_huge_numbers_do_not_overflow() {
        let rate = Rate {
            interval_nanos: 60 * SECOND,
            burst: 1_000_000,
        };
        let (verdict, next) = decide(u64::MAX - 5, 0, rate);
        assert!(matches!(verdict, Verdict::Over { .. }));
        assert_eq!(next, None);
        let endless = Rate {
            burst: u32::MAX,
            ..rate
        };
        assert_eq!(endless.tolerance(), u64::MAX, "saturated, not wrapped");
        assert_eq!(
            decide(u64::MAX - 5, u64::MAX - 5, rate),
            (Verdict::Within { ahead_nanos: 0 }, Some(u64::MAX))
        );
    }

    #[test]
    fn keys_keep_their_own_buckets() {
        let rates = table();
        let rate = ten_a_second(0);
        let (a, b) = (key_of(7, b"alice"), key_of(7, b"bob"));
        assert_ne!(a, b);
        assert_ne!(a, key_of(8, b"alice"), "another limit, another bucket");
        let now = SECOND;
        assert_eq!(rates.take(a, rate, now), Verdict::Within { ahead_nanos: 0 });
        assert_eq!(rates.take(b, rate, now), Verdict::Within { ahead_nanos: 0 });
        assert_eq!(
            rates.take(a, rate, now + MS),
            Verdict::Over { retry_nanos: 99 * MS }
        );
        assert_eq!(rates.in_use(), 2);
    }

    #[test]
    fn a_hundred_thousand_keys_stay_in_the_table_and_a_busy_key_is_still_limited() {
        let rates = table();
        let rate = ten_a_second(5);
        let now = 100 * SECOND;
        let busy = key_of(1, b"203.0.113.9");
        for _ in 0..6 {
            assert!(matches!(rates.take(busy, rate, now), Verdict::Within { .. }));
        }
        assert!(matches!(rates.take(busy, rate, now), Verdict::Over { .. }));
        for i in 0..100_000u32 {
            let key = key_of(1, format!("client-{i}").as_bytes());
            assert!(matches!(rates.take(key, rate, now), Verdict::Within { .. }));
        }
        assert!(rates.in_use() <= SLOTS, "the table is fixed");
        assert!(rates.in_use() > SLOTS * 9 / 10, "{} slots in use", rates.in_use());
        // The busy key may have been evicted (it then starts over, as nginx's oldest node):
        // either way it is limited again within its burst.
        let let_through = (0..10)
            .filter(|_| matches!(rates.take(busy, rate, now), Verdict::Within { .. }))
            .count();
        assert!(let_through <= 6, "{let_through} let through");
        assert!(matches!(rates.take(busy, rate, now), Verdict::Over { .. }));
    }

    #[test]
    fn a_full_group_gives_up_the_slot_that_emptied_first_then_the_closest_to_empty() {
        let rates = table();
        let rate = ten_a_second(0);
        // Keys of one group: the slot index is the hash modulo the groups.
        let group = |i: u64| i * (SLOTS / WAYS) as u64 + 3;
        for i in 0..WAYS as u64 {
            rates.take(group(i + 1), rate, SECOND + i * MS);
        }
        // At 1.15 s every bucket has emptied: the one that emptied first goes.
        let now = SECOND + 150 * MS;
        rates.take(group(100), rate, now);
        let keys: Vec<u64> = (0..WAYS).map(|w| rates.key(3 * WAYS + w).load(SeqCst)).collect();
        assert!(!keys.contains(&group(1)), "{keys:?}");
        assert!(keys.contains(&group(2)) && keys.contains(&group(100)));
        // Nothing has emptied at 1.0 s: the closest to empty goes, and its key starts over.
        let rates_at = |key, now| rates.take(group(key), rate, now);
        for key in 200..208 {
            assert!(matches!(rates_at(key, SECOND * 2), Verdict::Within { .. }));
        }
        assert_eq!(rates_at(300, SECOND * 2), Verdict::Within { ahead_nanos: 0 });
    }

    #[test]
    fn racing_workers_let_through_exactly_the_burst() {
        let rates = table();
        let rate = Rate {
            interval_nanos: SECOND,
            burst: 99,
        };
        let key = key_of(3, b"shared");
        let now = 5 * SECOND;
        let let_through = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Verdict::Within { .. } = rates.take(key, rate, now) {
                            let_through.fetch_add(1, SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(let_through.load(SeqCst), 100);
    }
}
