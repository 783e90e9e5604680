//! `basic_auth` as a request filter: the request's `Authorization: Basic` credentials,
//! checked against the route's users file (RFC 7617).
//!
//! A bcrypt verification takes milliseconds of the worker's loop, so credentials that
//! verified are remembered by the worker ([`Verified`]): a bounded list of SHA-256 digests of
//! the users file's path and the header's value, looked up in constant time. Only credentials
//! that verified are kept; wrong ones cost a verification every time. A reload starts new
//! workers, and so forgets them all.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{Context, SHA256};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::config::access::BasicAuth;
use crate::http::request::RequestHead;

/// Credentials a worker remembers as verified, at most (the oldest make way).
const REMEMBERED: usize = 64;

/// The standard alphabet, with or without the padding (clients differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Credentials this worker verified: digests of (users file, `Authorization` value).
pub struct Verified {
    digests: Vec<[u8; 32]>,
    /// Where the next one goes once the list is full.
    next: usize,
}

impl Default for Verified {
    fn default() -> Verified {
        Verified {
            digests: Vec::with_capacity(REMEMBERED),
            next: 0,
        }
    }
}

impl Verified {
    /// Whether `digest` is remembered: every entry is compared, each in constant time, so
    /// the time taken says nothing of which one (or how much of one) matched.
    fn holds(&self, digest: &[u8; 32]) -> bool {
        let mut found = false;
        for kept in &self.digests {
            found |= verify_slices_are_equal(kept, digest).is_ok();
        }
        found
    }

    fn remember(&mut self, digest: [u8; 32]) {
        if self.digests.len() < REMEMBERED {
            self.digests.push(digest);
        } else {
            self.digests[self.next] = digest;
            self.next = (self.next + 1) % REMEMBERED;
        }
    }
}

/// Whether the request carries credentials `auth`'s users file holds: exactly one
/// `Authorization` line, `Basic` with the base64 of `user:password` in UTF-8. Anything else
/// (no line, two, another scheme, bad base64, no colon, not UTF-8) is not.
pub fn authorized(auth: &BasicAuth, head: &RequestHead, buf: &[u8], verified: &mut Verified) -> bool {
    let mut lines = head.fields_named(buf, "authorization");
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let digest = digest_of(auth, value);
    if verified.holds(&digest) {
        return true;
    }
    let Some((user, password)) = credentials(value) else {
        return false;
    };
    let valid = auth.users.verify(&user, password.as_bytes());
    if valid {
        verified.remember(digest);
    }
    valid
}

/// SHA-256 of the users file's path, a zero byte and the header's value: the same
/// credentials checked against another file are another entry.
fn digest_of(auth: &BasicAuth, value: &[u8]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(auth.users.path().as_os_str().as_encoded_bytes());
    context.update(&[0]);
    context.update(value);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// The user and password of a `Basic` credentials value, when it is one: the scheme (any
/// case), spaces, then base64 of `user:password` in UTF-8 (the user ends at the first colon).
fn credentials(value: &[u8]) -> Option<(String, String)> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let encoded = rest.trim_ascii();
    let decoded = String::from_utf8(BASE64.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::config::htpasswd::Htpasswd;
    use crate::http::request::{self, HeadLimits};

    /// `htpasswd -nbB -C 4 alice 'wonder land'`; `openssl passwd -6 -salt saltsalt secret`.
    const USERS: &str = "alice:$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu\nbob:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n";

    fn auth(path: &str) -> BasicAuth {
        let users = Htpasswd::parse(std::path::Path::new(path), USERS.as_bytes()).unwrap();
        BasicAuth {
            realm: "staging".to_string(),
            users: Arc::new(users),
        }
    }

    fn basic(text: &str) -> String {
        format!("Basic {}", BASE64.encode(text))
    }

    /// Whether a request with these `Authorization` lines passes.
    fn passes(auth: &BasicAuth, lines: &[&str], verified: &mut Verified) -> bool {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for line in lines {
            text.push_str(&format!("Authorization: {line}\r\n"));
        }
        text.push_str("\r\n");
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        authorized(auth, &head, text.as_bytes(), verified)
    }

    #[test]
    fn good_credentials_pass_and_others_do_not() {
        let auth = auth("/etc/users");
        let mut verified = Verified::default();
        let mut check = |lines: &[&str]| passes(&auth, lines, &mut verified);
        assert!(check(&[&basic("alice:wonder land")]));
        assert!(check(&[&basic("bob:secret")]));
        let unpadded = basic("bob:secret").trim_end_matches('=').to_string();
        assert!(check(&[&unpadded]), "padding is optional");
        assert!(check(&[&basic("bob:secret").replace("Basic", "bAsIc")]));
        assert!(check(&[&basic("bob:secret").replace(' ', "   ")]));
        for refused in [
            basic("alice:wonder lan"),
            basic("alice:"),
            basic("mallory:wonder land"),
            basic("alice"),
            basic(":wonder land"),
            basic("bob:secret:"),
            "Basic".to_string(),
            "Basic ".to_string(),
            "Basic !!!!".to_string(),
            "Basic YWxpY2U6d29uZGVyIGxhbmQ=x".to_string(),
            basic("alice:wonder land").replace("Basic", "Bearer"),
            basic("alice:wonder land").replace("Basic ", "Basic\t"),
            "Digest username=\"alice\"".to_string(),
            // Latin-1 bytes, not UTF-8.
            format!("Basic {}", BASE64.encode(b"alice:wonder\xa0land")),
        ] {
            assert!(!check(&[&refused]), "{refused}");
        }
        assert!(!check(&[]), "no credentials");
        let good = basic("alice:wonder land");
        assert!(!check(&[&good, &good]), "two Authorization lines");
    }

    #[test]
    fn verified_credentials_are_remembered_per_users_file() {
        let auth = auth("/etc/users");
        let mut verified = Verified::default();
        let good = basic("alice:wonder land");
        assert!(passes(&auth, &[&good], &mut verified));
        assert_eq!(verified.digests.len(), 1);
        assert!(verified.holds(&digest_of(&auth, good.as_bytes())));
        assert!(passes(&auth, &[&good], &mut verified));
        assert_eq!(verified.digests.len(), 1, "found, not verified again");
        assert!(!passes(&auth, &[&basic("alice:nope")], &mut verified));
        assert_eq!(verified.digests.len(), 1, "failures are not remembered");
        let other = self::auth("/etc/other-users");
        assert!(!verified.holds(&digest_of(&other, good.as_bytes())));
    }

    #[test]
    fn the_list_stays_bounded_and_keeps_the_newest() {
        let mut verified = Verified::default();
        for n in 0..REMEMBERED as u8 + 10 {
            verified.remember([n; 32]);
        }
        assert_eq!(verified.digests.len(), REMEMBERED);
        assert!(!verified.holds(&[0; 32]) && !verified.holds(&[9; 32]));
        assert!(verified.holds(&[10; 32]) && verified.holds(&[REMEMBERED as u8 + 9; 32]));
    }
}
