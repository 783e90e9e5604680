//! The keys of TLS session tickets, shared by every worker so a client resumes its session
//! whichever worker it reaches next, and by the next master after a binary upgrade. The
//! master makes a key at its first start and a new one every `tls_ticket_rotation`; the
//! previous key still opens the tickets it sealed.
//!
//! A seqlock: the master (the only writer) makes the sequence odd, writes, makes it even;
//! a reader copies both keys and retries if the sequence was odd or moved meanwhile. Every
//! word is an atomic, so a torn copy is only ever retried, never undefined.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Words in the region: sequence, when the current key was made (in seconds), two keys of
/// [`KEY_WORDS`] each (current, previous), then when the current key was made in
/// milliseconds (a word added after the others, which older binaries neither read nor
/// write: see [`Tickets::made`]).
pub const WORDS: usize = 3 + 2 * KEY_WORDS;
/// A key: its id (0: none), then 32 bytes of secret.
const KEY_WORDS: usize = 5;
/// Where the milliseconds word is.
const MADE_MILLIS: usize = 2 + 2 * KEY_WORDS;

/// A ticket key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketKey {
    /// Never 0; tickets carry it to say which key sealed them.
    pub id: u64,
    pub secret: [u8; 32],
}

/// The keys as a reader sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketKeys {
    pub current: Option<TicketKey>,
    pub previous: Option<TicketKey>,
}

/// The region in the shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Tickets {
    pub(super) words: &'static [AtomicU64],
}

impl Tickets {
    /// Both keys, consistent with each other.
    pub fn keys(&self) -> TicketKeys {
        loop {
            let before = self.words[0].load(SeqCst);
            let keys = TicketKeys {
                current: self.key(2),
                previous: self.key(2 + KEY_WORDS),
            };
            if before % 2 == 0 && self.words[0].load(SeqCst) == before {
                return keys;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether a new key is due at `now`, keys lasting `period`: there is none, or the
    /// current one is `period` old.
    pub fn due(&self, now: SystemTime, period: Duration) -> bool {
        self.key(2).is_none() || millis(now).saturating_sub(self.made()) >= period.as_millis() as u64
    }

    /// When the current key was made, in milliseconds since the epoch: the milliseconds
    /// word, unless a binary that writes only the seconds word (one from before it, in a
    /// binary upgrade either way) made the key since; then the seconds.
    fn made(&self) -> u64 {
        let (seconds, millis) = (self.words[1].load(SeqCst), self.words[MADE_MILLIS].load(SeqCst));
        if millis / 1000 == seconds {
            millis
        } else {
            seconds * 1000
        }
    }

    /// Makes a key of `secret` the current one; the current one becomes the previous. Only
    /// the master calls it.
    pub fn rotate(&self, secret: [u8; 32], now: SystemTime) {
        let id = self.key(2).map_or(1, |key| key.id + 1);
        self.words[0].fetch_add(1, SeqCst);
        for i in 0..KEY_WORDS {
            let word = self.words[2 + i].load(SeqCst);
            self.words[2 + KEY_WORDS + i].store(word, SeqCst);
        }
        self.words[2].store(id, SeqCst);
        for (i, chunk) in secret.chunks(8).enumerate() {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.words[3 + i].store(word, SeqCst);
        }
        self.words[1].store(millis(now) / 1000, SeqCst);
        self.words[MADE_MILLIS].store(millis(now), SeqCst);
        self.words[0].fetch_add(1, SeqCst);
    }

    /// A region of its own, outside any shared memory.
    #[cfg(test)]
    pub fn for_tests() -> Tickets {
        Tickets {
            words: Box::leak((0..WORDS).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    fn key(&self, at: usize) -> Option<TicketKey> {
        let id = self.words[at].load(SeqCst);
        let mut secret = [0u8; 32];
        for (i, chunk) in secret.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&self.words[at + 1 + i].load(SeqCst).to_le_bytes());
        }
        (id != 0).then_some(TicketKey { id, secret })
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rotate_when_due_and_the_previous_one_stays() {
        let tickets = Tickets::for_tests();
        let words = tickets.words;
        let start = UNIX_EPOCH + Duration::from_millis(1_000_000_700);
        let period = Duration::from_secs(2);
        assert_eq!(
            tickets.keys(),
            TicketKeys {
                current: None,
                previous: None
            }
        );
        assert!(tickets.due(start, period));
        tickets.rotate([1; 32], start);
        let first = tickets.keys().current.unwrap();
        assert_eq!((first.id, first.secret), (1, [1; 32]));
        // To the millisecond: not at 1.999 s, though the whole seconds are 2 apart.
        assert!(!tickets.due(start + Duration::from_millis(1_999), period));
        assert!(tickets.due(start + period, period));
        tickets.rotate([2; 32], start + period);
        let keys = tickets.keys();
        assert_eq!(keys.current.map(|k| (k.id, k.secret)), Some((2, [2; 32])));
        assert_eq!(keys.previous, Some(first));
        assert_eq!(
            words[0].load(SeqCst),
            4,
            "two writes, each an odd then even sequence"
        );
    }

    #[test]
    fn a_key_made_by_a_binary_that_writes_only_seconds_is_timed_by_them() {
        let tickets = Tickets::for_tests();
        let start = UNIX_EPOCH + Duration::from_millis(1_000_000_700);
        let period = Duration::from_secs(10);
        tickets.rotate([1; 32], start);
        // An older master rotates 5 s later: its seconds word moves, the milliseconds stay.
        tickets.words[1].store(1_000_005, SeqCst);
        assert!(
            !tickets.due(start + period, period),
            "made 5.7 s before, by the seconds word"
        );
        assert!(tickets.due(start + Duration::from_secs(15), period));
    }
}
