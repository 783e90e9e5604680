//! Which server a request's host picks among those sharing its address, as nginx's
//! `server_name`: an exact name first, then the longest `*.` name, then the longest `.*`
//! name, else the address's default server. Case, a trailing dot and the port do not count.
//!
//! Each kind of name is a hash map, looked up once per dot of the host: no scan over the
//! names, however many there are.

use std::collections::HashMap;

use crate::config::{Config, ServerName};

/// The longest host a name can match (RFC 1035's limit on a name is 253).
const MAX_HOST: usize = 255;

/// The servers on one address, by name.
#[derive(Debug)]
pub struct Names {
    default: usize,
    exact: HashMap<Box<[u8]>, usize>,
    /// `*.example.com` as `example.com`.
    suffixes: HashMap<Box<[u8]>, usize>,
    /// `www.example.*` as `www.example`.
    prefixes: HashMap<Box<[u8]>, usize>,
}

impl Names {
    /// The names of `servers` (indices in `config`, the default first). A name claimed twice
    /// keeps its first server (the config refuses that anyway).
    pub fn new(config: &Config, servers: &[usize]) -> Names {
        let mut names = Names {
            default: servers[0],
            exact: HashMap::new(),
            suffixes: HashMap::new(),
            prefixes: HashMap::new(),
        };
        for &server in servers {
            for name in &config.servers[server].names {
                let (map, key) = match name {
                    ServerName::Exact(name) => (&mut names.exact, name),
                    ServerName::Suffix(rest) => (&mut names.suffixes, rest),
                    ServerName::Prefix(rest) => (&mut names.prefixes, rest),
                };
                map.entry(key.as_bytes().into()).or_insert(server);
            }
        }
        names
    }

    /// The server for `host` (without its port), the default one when no name matches.
    pub fn server_for(&self, host: Option<&[u8]>) -> usize {
        // An address with one server (the usual case) has no names to look through.
        let named = !(self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty());
        let Some(host) = host.filter(|_| named) else {
            return self.default;
        };
        let host = host.strip_suffix(b".").unwrap_or(host);
        if host.len() > MAX_HOST {
            return self.default;
        }
        let mut lower = [0u8; MAX_HOST];
        let lower = &mut lower[..host.len()];
        lower.copy_from_slice(host);
        lower.make_ascii_lowercase();
        let lower = &*lower;
        self.exact
            .get(lower)
            .or_else(|| self.longest_suffix(lower))
            .or_else(|| self.longest_prefix(lower))
            .copied()
            .unwrap_or(self.default)
    }

    /// The `*.` name matching the longest part of `host` after one of its dots.
    fn longest_suffix(&self, host: &[u8]) -> Option<&usize> {
        let dots = host.iter().enumerate().filter(|(_, &b)| b == b'.');
        dots.map(|(at, _)| at)
            .find_map(|at| self.suffixes.get(&host[at + 1..]))
    }

    /// The `.*` name matching the longest part of `host` before one of its dots.
    fn longest_prefix(&self, host: &[u8]) -> Option<&usize> {
        let mut end = host.len();
        while let Some(at) = host[..end].iter().rposition(|&b| b == b'.') {
            if let Some(server) = self.prefixes.get(&host[..at]) {
                return Some(server);
            }
            end = at;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_text;
    use std::path::Path;

    /// Servers 0..n on one address, server `i` named `names[i]` (comma-separated).
    fn on_one_address(names: &[&str], default: Option<usize>) -> (Config, Names) {
        let mut text = String::new();
        for (i, list) in names.iter().enumerate() {
            let quoted: Vec<String> = list
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| format!("\"{n}\""))
                .collect();
            let default = if default == Some(i) {
                "default = true\n"
            } else {
                ""
            };
            text.push_str(&format!(
                "[[server]]\nlisten = [\"127.0.0.1:8080\"]\nnames = [{}]\n{default}[[server.route]]\nprefix = \"/\"\nupstream = \"a\"\n",
                quoted.join(", ")
            ));
        }
        text.push_str("[upstream.a]\nservers = [\"127.0.0.1:3000\"]\n");
        let config = load_text(Path::new("t.toml"), &text).unwrap();
        let on = config.servers_on(&"127.0.0.1:8080".parse().unwrap());
        let names = Names::new(&config, &on);
        (config, names)
    }

    #[test]
    fn exact_then_longest_leading_then_longest_trailing_wildcard_then_the_default() {
        let (_config, names) = on_one_address(
            &[
                "",
                "example.com",
                "*.example.com",
                "*.shop.example.com",
                "www.example.*",
                "www.example.co.*",
                "mail.*",
            ],
            None,
        );
        let pick = |host: &str| names.server_for(Some(host.as_bytes()));
        assert_eq!(pick("example.com"), 1);
        assert_eq!(pick("EXAMPLE.com."), 1, "case and a trailing dot do not count");
        assert_eq!(pick("a.example.com"), 2);
        assert_eq!(pick("a.b.example.com"), 2);
        assert_eq!(pick("a.shop.example.com"), 3, "the longest leading wildcard");
        assert_eq!(
            pick("www.example.com"),
            2,
            "a leading wildcard before a trailing one"
        );
        assert_eq!(pick("www.example.org"), 4);
        assert_eq!(pick("www.example.co.uk"), 5, "the longest trailing wildcard");
        assert_eq!(pick("mail.example.org"), 6);
        assert_eq!(pick("other.org"), 0);
        assert_eq!(pick("example.com.evil"), 0);
        assert_eq!(names.server_for(None), 0, "no Host: the default");
        assert_eq!(pick(&"a.".repeat(200)), 0, "too long for any name");
    }

    #[test]
    fn the_default_is_the_marked_server_else_the_first() {
        let (_config, names) = on_one_address(&["a.test", "b.test"], Some(1));
        assert_eq!(names.server_for(Some(b"c.test")), 1);
        assert_eq!(names.server_for(Some(b"a.test")), 0);
        let (_config, names) = on_one_address(&["a.test", "b.test"], None);
        assert_eq!(names.server_for(Some(b"c.test")), 0);
    }
}
