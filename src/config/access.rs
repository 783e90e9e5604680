//! Guards a server or route puts before its handler: `allow` / `deny` (which client
//! addresses it answers, as nginx's access module) and `basic_auth` (who may, as nginx's
//! `auth_basic` with `auth_basic_user_file`).
//!
//! A route with either key of its own has its own rules in place of its server's, as an
//! nginx `location` with its own `allow`/`deny` inherits none of the server's.

use std::net::IpAddr;
use std::sync::Arc;

use super::cidr::Cidr;
use super::htpasswd::Htpasswd;

/// `allow` and `deny`: a client in `deny` is refused; with `allow`, so is a client outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// `None`: no `allow` list (every client not denied passes). Never empty.
    pub allow: Option<Vec<Cidr>>,
    pub deny: Vec<Cidr>,
}

impl AccessRules {
    /// Whether `client` may be answered (an IPv4-mapped address counts as its IPv4 self).
    pub fn permits(&self, client: IpAddr) -> bool {
        let within = |ranges: &[Cidr]| ranges.iter().any(|range| range.contains(client));
        !within(&self.deny) && self.allow.as_deref().is_none_or(within)
    }
}

/// `basic_auth = { realm = "staging", users = "htpasswd" }`.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    /// What browsers show in their prompt; no control characters.
    pub realm: String,
    /// The users file, read when the config loaded.
    pub users: Arc<Htpasswd>,
}

impl BasicAuth {
    /// The `WWW-Authenticate` value of a 401: `Basic realm="staging", charset="UTF-8"`
    /// (RFC 7617; `"` and `\` in the realm escaped).
    pub fn challenge(&self) -> String {
        let mut value = String::from("Basic realm=\"");
        for c in self.realm.chars() {
            if c == '"' || c == '\\' {
                value.push('\\');
            }
            value.push(c);
        }
        value.push_str("\", charset=\"UTF-8\"");
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> AccessRules {
        let cidrs = |list: &[&str]| list.iter().map(|c| Cidr::parse(c).unwrap()).collect::<Vec<_>>();
        AccessRules {
            allow: allow.map(cidrs),
            deny: cidrs(deny),
        }
    }

    fn permits(rules: &AccessRules, client: &str) -> bool {
        rules.permits(client.parse().unwrap())
    }

    #[test]
    fn deny_wins_then_allow_decides_when_given() {
        let lan = rules(Some(&["10.0.0.0/8", "::1"]), &["10.0.0.7"]);
        assert!(permits(&lan, "10.1.2.3"));
        assert!(permits(&lan, "::1"));
        assert!(!permits(&lan, "10.0.0.7"), "denied inside the allowed range");
        assert!(!permits(&lan, "192.0.2.1"), "outside allow");
        assert!(!permits(&lan, "2001:db8::1"), "outside allow");
        assert!(
            permits(&lan, "::ffff:10.1.2.3"),
            "a mapped address is its IPv4 self"
        );
        assert!(!permits(&lan, "::ffff:10.0.0.7"));
        let deny_only = rules(None, &["192.0.2.0/24", "2001:db8::/32"]);
        assert!(!permits(&deny_only, "192.0.2.9") && !permits(&deny_only, "::ffff:192.0.2.9"));
        assert!(!permits(&deny_only, "2001:db8::5"));
        assert!(permits(&deny_only, "198.51.100.1") && permits(&deny_only, "::1"));
        let open = rules(None, &[]);
        assert!(
            permits(&open, "203.0.113.5"),
            "own rules that deny nothing open a route"
        );
        let mapped_rule = rules(Some(&["::ffff:0:0/96"]), &[]);
        assert!(permits(&mapped_rule, "127.0.0.1") && permits(&mapped_rule, "::ffff:127.0.0.1"));
        assert!(!permits(&mapped_rule, "::1"));
    }

    #[test]
    fn the_challenge_quotes_the_realm() {
        let entry = b"a:$2y$04$ZJOz5P1u2KWqTHQjzNCluut5vUIt9..hG2p91.MhIBsnU97jjnwOu\n";
        let users = Arc::new(Htpasswd::parse(std::path::Path::new("u"), entry).unwrap());
        let auth = |realm: &str| BasicAuth {
            realm: realm.to_string(),
            users: Arc::clone(&users),
        };
        assert_eq!(
            auth("staging").challenge(),
            "Basic realm=\"staging\", charset=\"UTF-8\""
        );
        assert_eq!(
            auth("a \"b\" \\ c").challenge(),
            "Basic realm=\"a \\\"b\\\" \\\\ c\", charset=\"UTF-8\""
        );
    }
}
