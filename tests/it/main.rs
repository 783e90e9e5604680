//! Integration tests for `shoal`: each test starts the real binary on its own port and talks
//! raw HTTP/1.1 to it over 127.0.0.1.

mod access_log;
mod access_rules;
mod bad_input;
mod basic_auth;
mod cache;
mod check;
mod cli;
mod client_limits;
mod compress;
mod deploy;
mod exhaustion;
mod freshness;
mod harness;
mod hostile_clients;
mod http_engine;
mod limits;
mod master;
mod metrics;
mod path_safety;
mod pid_file;
mod privileges;
mod procfs;
mod proxy;
mod quick_mode;
mod request_id;
mod route_answers;
mod server_names;
mod static_files;
pub mod status;
pub mod supervision;
mod systemd;
mod tls;
mod unix_listen;
mod upstream;
mod verdicts;
