//! What the master decides about privileges and resources before it forks: who the workers
//! run as, handing them the log files they must reopen, and fitting `max_connections` to the
//! open-files limit (the default is derived from it; an explicit value it cannot cover is
//! reported).
//!
//! The master keeps running as whoever started it (root binds low ports, reloads, upgrades and
//! signals workers); each worker drops to the configured user right after fork (spawn.rs).

use std::fs::OpenOptions;
use std::path::PathBuf;

use log::{info, warn};

use crate::config::{AccessLog, Config, RunAs, DEFAULT_MAX_CONNECTIONS};
use crate::sys;

/// Descriptors a worker needs besides its connections: listeners, epoll, signalfd, channel,
/// logs, cached large files.
const BASE_DESCRIPTORS: u64 = 256;
/// The default `max_connections` never goes below this, even under a tiny open-files limit
/// (the 256 above is generous): a worker that runs out of descriptors pauses accepting, which
/// serves better than one that takes a single connection at a time.
const MIN_DEFAULT_CONNECTIONS: u64 = 16;

/// Settles `config.user` for this master's effective ids (see [`worker_identity`]).
pub fn adopt_worker_identity(config: &mut Config) -> Result<(), String> {
    let (euid, egid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    config.user = worker_identity(euid, egid, config.user.as_ref())?;
    Ok(())
}

/// The identity workers must switch to, given the master's effective ids: `Ok(None)` means
/// they stay as they are. Started as root, shoal refuses to keep its workers root unless the
/// config says `user = "root"`; not root, it cannot become anybody else.
pub fn worker_identity(euid: u32, egid: u32, wanted: Option<&RunAs>) -> Result<Option<RunAs>, String> {
    match wanted {
        None if euid == 0 => Err(
            "refusing to run workers as root: set user = \"nobody\" (or -U nobody), \
                                  or user = \"root\" if that is really meant"
                .to_string(),
        ),
        None => Ok(None),
        Some(run_as) if euid == 0 => Ok(Some(run_as.clone())),
        Some(run_as) if (run_as.uid, run_as.gid) == (euid, egid) => Ok(None),
        Some(run_as) => Err(format!(
            "user = \"{}\" ({}:{}) needs shoal to start as root; it runs as {euid}:{egid}",
            run_as.user, run_as.uid, run_as.gid
        )),
    }
}

/// The log files workers open by path (and reopen after rotation).
fn worker_log_files(config: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let AccessLog::File(path) = &config.access_log {
        files.push(path.clone());
    }
    files.extend(config.error_log.clone());
    files
}

/// Creates the log files workers write and gives them to the workers' user, so they can reopen
/// them after logrotate moved them (nginx does the same). Nothing to do unless they leave root.
pub fn hand_over_logs(config: &Config) -> Result<(), (std::io::Error, PathBuf)> {
    let Some(run_as) = config.user.as_ref().filter(|run_as| run_as.uid != 0) else {
        return Ok(());
    };
    for path in worker_log_files(config) {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| (e, path.clone()))?;
        sys::hand_over(&file, run_as.uid, run_as.gid).map_err(|e| (e.into(), path.clone()))?;
    }
    Ok(())
}

/// Makes the response cache's directory (`[cache] path`) where missing, owned by the
/// workers' user.
pub fn prepare_cache(config: &Config) -> Result<(), (std::io::Error, PathBuf)> {
    let Some(store) = &config.cache else {
        return Ok(());
    };
    let owner = config
        .user
        .as_ref()
        .filter(|run_as| run_as.uid != 0)
        .map(|run_as| (run_as.uid, run_as.gid));
    crate::cache::store::prepare(&store.path, owner).map_err(|e| (e, store.path.clone()))
}

/// Idle upstream connections one worker may keep, all upstreams together.
fn pooled(config: &Config) -> u64 {
    config.upstreams.iter().map(|u| u.keepalive as u64).sum()
}

/// Descriptors one worker may need: a client and an upstream socket per connection, the idle
/// upstream pool, and the rest.
pub fn open_files_needed(config: &Config) -> u64 {
    2 * config.limits.max_connections as u64 + pooled(config) + BASE_DESCRIPTORS
}

/// The default `max_connections` for a worker allowed `open_files` descriptors: what they
/// cover by [`open_files_needed`]'s count, `(open_files − pooled − 256) / 2`, at most
/// [`DEFAULT_MAX_CONNECTIONS`] and at least [`MIN_DEFAULT_CONNECTIONS`].
pub fn default_max_connections(open_files: u64, pooled: u64) -> usize {
    let covered = open_files.saturating_sub(pooled + BASE_DESCRIPTORS) / 2;
    covered.clamp(MIN_DEFAULT_CONNECTIONS, DEFAULT_MAX_CONNECTIONS as u64) as usize
}

/// Fits `max_connections` to the open-files limit: the default is derived from it (one line
/// when that is below [`DEFAULT_MAX_CONNECTIONS`]); an explicit value it cannot cover gets a
/// warning.
pub fn fit_open_files(config: &mut Config, limit: sys::NofileLimit) {
    if !config.limits.max_connections_explicit {
        let fitted = default_max_connections(limit.soft, pooled(config));
        config.limits.max_connections = fitted;
        if fitted < DEFAULT_MAX_CONNECTIONS {
            info!(
                "max_connections defaults to {fitted} per worker: what the open-files limit ({}) covers",
                limit.soft
            );
        }
        return;
    }
    let needed = open_files_needed(config);
    if limit.soft < needed {
        warn!(
            "open files: each worker may have {} (hard limit {}), but max_connections = {} needs about \
             {needed}; raise the hard limit (LimitNOFILE=, ulimit -Hn) or lower max_connections",
            limit.soft, limit.hard, config.limits.max_connections
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_as(user: &str, uid: u32, gid: u32) -> RunAs {
        RunAs {
            user: user.to_string(),
            uid,
            gid,
        }
    }

    #[test]
    fn who_the_workers_run_as() {
        let nobody = run_as("nobody", 65534, 65534);
        let root = run_as("root", 0, 0);
        let me = run_as("me", 1000, 1000);
        /// (master's euid, egid, the configured user, the workers' identity or an error's words)
        type Case<'a> = (u32, u32, Option<&'a RunAs>, Result<Option<&'a RunAs>, &'a str>);
        let cases: &[Case] = &[
            (0, 0, None, Err("refusing to run workers as root")),
            (0, 0, Some(&nobody), Ok(Some(&nobody))),
            (0, 0, Some(&root), Ok(Some(&root))),
            (1000, 1000, None, Ok(None)),
            (1000, 1000, Some(&me), Ok(None)),
            (
                1000,
                1000,
                Some(&nobody),
                Err("user = \"nobody\" (65534:65534) needs shoal to start as root"),
            ),
            (
                1000,
                100,
                Some(&me),
                Err("needs shoal to start as root; it runs as 1000:100"),
            ),
        ];
        for (euid, egid, wanted, expected) in cases {
            let got = worker_identity(*euid, *egid, *wanted);
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_ref(), *want, "{euid}:{egid}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{euid}:{egid}: {got}"),
                (got, want) => panic!("{euid}:{egid}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_default_max_connections_fits_the_open_files_limit() {
        let cases: &[(u64, u64, usize)] = &[
            (1_048_576, 0, 10_000),
            (20_256, 0, 10_000),
            (20_000, 0, 9_872),
            (20_000, 64, 9_840),
            (1_024, 0, 384),
            (1_024, 32, 368),
            (300, 0, 22),
            (256, 0, 16),
            (0, 1_000, 16),
        ];
        for &(open_files, pooled, want) in cases {
            assert_eq!(
                default_max_connections(open_files, pooled),
                want,
                "{open_files} files, {pooled} pooled"
            );
        }
        let mut config = Config::quick(&Default::default()).unwrap();
        let limit = sys::NofileLimit {
            soft: 20_000,
            hard: 20_000,
        };
        fit_open_files(&mut config, limit);
        assert_eq!(config.limits.max_connections, 9_872);
        assert!(
            open_files_needed(&config) <= limit.soft,
            "the default always fits"
        );
        config.limits.max_connections = 10_000;
        config.limits.max_connections_explicit = true;
        fit_open_files(&mut config, limit);
        assert_eq!(config.limits.max_connections, 10_000, "an explicit value is kept");
    }

    #[test]
    fn a_worker_needs_two_descriptors_per_connection() {
        let mut config = Config::quick(&Default::default()).unwrap();
        config.limits.max_connections = 1000;
        assert_eq!(open_files_needed(&config), 2000 + BASE_DESCRIPTORS);
    }
}
