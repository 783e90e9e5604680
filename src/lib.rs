//! shoal: a prefork reverse proxy and static file server for Linux.
//!
//! A thin single-threaded master binds one SO_REUSEPORT listening socket per worker slot and
//! supervises forked workers; each worker runs its own `mio` event loop serving HTTP/1.x.
//! See `docs/architecture.md` for the picture and `docs/lexicon.md` for the words we use.

#![deny(unsafe_code)]

pub mod cache;
pub mod channel;
pub mod config;
pub mod control;
pub mod files;
pub mod http;
pub mod io;
#[cfg(test)]
mod layering;
pub mod master;
pub mod pipeline;
pub mod prometheus;
pub mod proxy;
pub mod shared;
pub mod stats;
pub mod status;
#[allow(unsafe_code)]
pub mod sys;
pub mod worker;
