//! The reverse proxy against scripted test upstreams ([`crate::upstream`]): forwarding,
//! bodies, failures, broken upstreams, the keep-alive pool, balancing, health checks, upgrades, smuggling and
//! try_files.

mod balance;
mod bodies;
mod broken;
mod errors;
mod forwarding;
mod health;
mod pool;
mod smuggling;
pub mod support;
mod try_files;
mod websocket;
