//! The response cache one shoal instance shares across its workers (issue 16): upstream
//! responses of routes with `cache = true`, stored as files under `[cache] path` and served
//! from them with sendfile.
//!
//! - `policy.rs`: RFC 9111 for a shared cache: what is stored, how it ages, when stale may
//!   serve.
//! - `entry.rs`: one stored response on disk, written whole or not at all.

pub mod entry;
pub mod policy;
