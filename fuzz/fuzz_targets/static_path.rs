//! The path resolver (`http::target`): request target -> normalized path -> the path
//! beneath a route's root, for arbitrary targets and route prefixes.
//!
//! Input: one flag byte (bit 0: strip_prefix; bits 1..: prefix length), the prefix (after a
//! '/' added in front), then the raw request target. Oracles: a resolved path starts with '/'
//! and has no empty, "." or ".." segment, NUL, backslash or control byte; resolving it again
//! changes nothing; what is opened beneath the root never leaves it (no ".." or absolute
//! component once joined to the root); and what a stripping proxy route sends upstream (the
//! raw target cut by `upstream_target_start`) resolves to the same path beneath the prefix.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use shoal::config::{Route, Serve};
use shoal::http::target;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let prefix_len = usize::from(flags >> 1).min(rest.len());
    let (prefix, target) = rest.split_at(prefix_len);
    let Ok(prefix) = std::str::from_utf8(prefix) else {
        return;
    };
    let route = Route {
        prefix: format!("/{prefix}"),
        strip_prefix: flags & 1 == 1,
        rewrite_location: true,
        response_buffering: true,
        request_buffering: true,
        ignore_client_abort: false,
        serve: Serve::Proxy(0),
    };
    let Ok(url) = target::resolve_target(target) else {
        return;
    };
    let path: &str = &url.path;
    assert!(path.starts_with('/'), "{path:?}");
    let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(
                !matches!(segment, "" | "." | ".."),
                "segment {segment:?} in {path:?}"
            );
        }
    }
    assert!(
        !path
            .bytes()
            .any(|b| b == 0 || b == b'\\' || b < 0x20 || b == 0x7f),
        "{path:?}"
    );
    if !path.contains(['%', '?']) {
        let again = target::resolve_target(path.as_bytes()).expect("a resolved path resolves");
        assert_eq!(again.path, path, "resolving twice changed it");
    }
    if !route.matches(path) {
        return;
    }
    let relative = route.beneath(path);
    let root = Path::new("/srv/site");
    let joined = root.join(relative);
    assert!(joined.starts_with(root), "{relative:?} leaves the root");
    for component in joined.components().skip(root.components().count()) {
        assert!(
            matches!(component, Component::Normal(_)),
            "{component:?} in {relative:?} (target {:?}, route {:?})",
            String::from_utf8_lossy(target),
            route.prefix
        );
    }
    if route.strip_prefix {
        let Some(start) = target::upstream_target_start(target, path, Some(&route.prefix)) else {
            return;
        };
        let rest = &target[start..];
        let mut sent = Vec::with_capacity(rest.len() + 1);
        if !rest.starts_with(b"/") {
            sent.push(b'/');
        }
        sent.extend_from_slice(rest);
        let upstream = target::resolve_target(&sent).expect("what goes upstream resolves");
        assert_eq!(
            upstream.path.trim_start_matches('/'),
            relative,
            "sent {:?} for target {:?} on {:?}",
            String::from_utf8_lossy(&sent),
            String::from_utf8_lossy(target),
            route.prefix
        );
    }
});
