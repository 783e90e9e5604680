//! Request ids: the client's `X-Request-Id` when it is sane, else one made here.
//!
//! A made id is `BOOT-PID-SLOT-N` in hex (`6740a1b2-5f3a-0-2a`): the worker's start second
//! and pid tell it apart from every other worker, past or present, and `N` counts its
//! requests. Making one formats a counter into a fixed buffer: no allocation, no syscall.

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest id accepted from a client (and the capacity of [`RequestId`]).
pub const MAX_ID_BYTES: usize = 128;

/// One request's id, held inline so it can outlive the request head without allocating.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; MAX_ID_BYTES],
    len: u8,
}

impl RequestId {
    /// The id's bytes (visible ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    fn from_bytes(id: &[u8]) -> RequestId {
        let mut bytes = [0u8; MAX_ID_BYTES];
        bytes[..id.len()].copy_from_slice(id);
        RequestId {
            bytes,
            len: id.len() as u8,
        }
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// True for an id worth keeping: 1 to [`MAX_ID_BYTES`] bytes of visible ASCII (no spaces, no
/// control bytes), so it can go into a header and a log line as it is.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A worker's maker of request ids.
pub struct RequestIds {
    /// `BOOT-PID-SLOT-`, formatted once.
    prefix: RequestId,
    next: u64,
}

impl RequestIds {
    /// The id maker of the worker in `slot`, running as this process.
    pub fn new(slot: usize) -> RequestIds {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        RequestIds::with_prefix(&format!("{boot:x}-{:x}-{slot:x}-", std::process::id()))
    }

    fn with_prefix(prefix: &str) -> RequestIds {
        RequestIds {
            prefix: RequestId::from_bytes(&prefix.as_bytes()[..prefix.len().min(MAX_ID_BYTES - 16)]),
            next: 0,
        }
    }

    /// The client's id if it is sane, else a new one.
    pub fn pick(&mut self, from_client: Option<&[u8]>) -> RequestId {
        match from_client {
            Some(id) if is_sane(id) => RequestId::from_bytes(id),
            _ => self.make(),
        }
    }

    /// A new id: the prefix, then the counter in hex.
    pub fn make(&mut self) -> RequestId {
        let mut id = self.prefix;
        let mut n = self.next;
        self.next = self.next.wrapping_add(1);
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[(n & 0xf) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let start = id.len as usize;
        let hex = &digits[at..];
        id.bytes[start..start + hex.len()].copy_from_slice(hex);
        id.len += hex.len() as u8;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_count_up_in_hex_after_the_prefix() {
        let mut ids = RequestIds::with_prefix("5f-1a-0-");
        let made: Vec<String> = (0..18)
            .map(|_| String::from_utf8(ids.make().as_bytes().to_vec()).unwrap())
            .collect();
        assert_eq!(made[0], "5f-1a-0-0");
        assert_eq!(made[15], "5f-1a-0-f");
        assert_eq!(made[17], "5f-1a-0-11");
        ids.next = u64::MAX;
        assert_eq!(ids.make().as_bytes(), b"5f-1a-0-ffffffffffffffff");
    }

    #[test]
    fn workers_make_different_ids() {
        let (a, b) = (RequestIds::new(0).make(), RequestIds::new(1).make());
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert!(is_sane(a.as_bytes()), "{a:?}");
    }

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let mut ids = RequestIds::with_prefix("p-");
        assert_eq!(ids.pick(Some(b"abc-123")).as_bytes(), b"abc-123");
        let longest = [b'x'; MAX_ID_BYTES];
        assert_eq!(ids.pick(Some(&longest)).as_bytes(), longest);
        for insane in [
            &b""[..],
            b"a b",
            b"a\"b\x01",
            b"caf\xc3\xa9",
            &[b'x'; MAX_ID_BYTES + 1],
        ] {
            assert!(ids.pick(Some(insane)).as_bytes().starts_with(b"p-"), "{insane:?}");
        }
        assert!(ids.pick(None).as_bytes().starts_with(b"p-"));
    }
}
