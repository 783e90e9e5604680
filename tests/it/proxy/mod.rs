//! The reverse proxy against scripted test upstreams ([`crate::upstream`]): forwarding,
//! bodies, failures, broken upstreams, the keep-alive pool, balancing, health checks, upgrades, smuggling,
//! try_files and the shield a slow client needs.

mod balance;
mod bodies;
mod broken;
mod caps;
mod error_pages;
mod errors;
mod forwarding;
mod header_rules;
mod health;
mod offload;
mod pool;
mod proxy_protocol;
mod shield;
mod smuggling;
pub mod support;
mod try_files;
mod unix_upstream;
mod websocket;
