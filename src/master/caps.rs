//! The master's side of the shared state (`src/shared`): before workers start with a config,
//! the rows it needs exist and carry its caps; what a dead worker held comes back when it is
//! reaped (or, for another master's workers, when a sweep finds them gone); rows that no
//! living worker's config names are freed for others.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::tally::Labels;
use super::Master;
use crate::config::Config;
use crate::shared::{RowKey, Shared, ROWS};
use crate::sys;

/// Environment variable with the memfd and eventfd of the shared state, `MEMFD,EVENTFD`, for
/// the new master of a binary upgrade.
pub const SHARED_STATE_VAR: &str = "SHOAL_SHARED_STATE";
/// How often the master looks for rows and permits nobody uses any more.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The shared state of the master this one upgrades, if it passed one, else a new one, with
/// a TLS ticket key made if it has none (or one `rotation` old).
pub fn open(rotation: Duration) -> io::Result<&'static Shared> {
    let shared = adopt_or_create()?;
    rotate_ticket_keys(shared, rotation)?;
    Ok(shared)
}

/// Makes a new TLS session ticket key when the current one is `rotation` old (see
/// `shared::tickets`); true if it did.
pub fn rotate_ticket_keys(shared: &Shared, rotation: Duration) -> io::Result<bool> {
    let (tickets, now) = (shared.tickets(), SystemTime::now());
    if !tickets.due(now, rotation) {
        return Ok(false);
    }
    let mut secret = [0u8; 32];
    sys::random_bytes(&mut secret)?;
    tickets.rotate(secret, now);
    Ok(true)
}

fn adopt_or_create() -> io::Result<&'static Shared> {
    if let Ok(value) = std::env::var(SHARED_STATE_VAR) {
        std::env::remove_var(SHARED_STATE_VAR);
        let fds: Vec<i32> = value.split(',').filter_map(|fd| fd.parse().ok()).collect();
        if let [memfd, eventfd] = fds[..] {
            if let Some(shared) = Shared::adopt(memfd, eventfd) {
                info!("binary upgrade: sharing concurrency caps and queues with the old workers");
                return Ok(shared);
            }
        }
        warn!("{SHARED_STATE_VAR}={value} is not shared state: starting afresh (caps count from zero)");
    }
    Shared::create()
}

/// `SHARED_STATE_VAR`'s value for a new master.
pub fn describe_for_upgrade(shared: &Shared) -> String {
    let [memfd, eventfd] = shared.fds();
    format!("{},{}", memfd.as_raw_fd(), eventfd.as_raw_fd())
}

/// Makes the rows `config` needs, then gives its capped servers their caps. Fails before
/// any cap changes when the rows run out (rows it made are swept later).
pub fn prepare(shared: &Shared, config: &Config) -> Result<(), String> {
    let exhausted =
        || format!("more than {ROWS} upstream servers with max_conns, over all configs still in use");
    let mut caps = Vec::new();
    for upstream in config.upstreams.iter().filter(|u| u.is_capped()) {
        shared.claim(RowKey::line(&upstream.name)).ok_or_else(exhausted)?;
        for server in upstream.servers.iter().filter(|s| s.max_conns > 0) {
            let row = shared
                .claim(RowKey::cap(&upstream.name, &server.addr))
                .ok_or_else(exhausted)?;
            caps.push((row, server.max_conns));
        }
    }
    for (row, cap) in caps {
        shared.cap(row).set_cap(cap);
    }
    Ok(())
}

/// Every row a worker started with `labels` may use.
fn keys_of(labels: &Labels, keys: &mut BTreeSet<RowKey>) {
    for (name, servers) in &labels.upstreams {
        keys.insert(RowKey::line(name));
        keys.extend(servers.iter().map(|s| RowKey::cap(name, s)));
    }
}

/// True unless no process has this pid (a zombie still has it, until it is reaped).
fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None) != Err(Errno::ESRCH)
}

impl Master {
    /// What worker `pid`, just reaped, held in the shared state comes back at once.
    pub(super) fn reclaim_from(&self, pid: Pid) {
        let pid = pid.as_raw() as u32;
        let freed = self.shared_state.reclaim(|holder| holder == pid);
        if freed.permits > 0 {
            let permits = freed.permits;
            info!("worker pid {pid} held {permits} upstream permits; they are free again");
            // Requests queued in the other workers may take them now.
            self.shared_state.bell.ring();
        }
        if freed.connections > 0 {
            let connections = freed.connections;
            info!("worker pid {pid} had {connections} client connections counted under limit_connections; they no longer count");
        }
    }

    /// A new TLS session ticket key when the current one is `tls_ticket_rotation` old: looked
    /// at on every turn of the loop, which waits at most `TICK`, so a short period keeps its
    /// pace without waking the master more. Never while a new master of a binary upgrade
    /// starts, nor while stopping: one master writes the keys at a time (the new one from
    /// its start, the old one again if the upgrade fails).
    pub(super) fn rotate_tickets(&mut self) {
        if self.upgrade.is_some() || self.phase != super::Phase::Running {
            return;
        }
        match rotate_ticket_keys(self.shared_state, self.config.tls_ticket_rotation) {
            Ok(true) => info!("made a new TLS session ticket key (the previous one still opens its tickets)"),
            Ok(false) => {}
            Err(e) => warn!("cannot make a new TLS session ticket key: {e}"),
        }
    }

    /// Once a second: gives back what exited processes of another master (an upgrade's)
    /// held, and frees rows no living worker uses, unless another master's workers are
    /// still about (they may use rows this master's configs do not name).
    pub(super) fn sweep_shared_state(&mut self) {
        let now = Instant::now();
        if now < self.next_shared_sweep {
            return;
        }
        self.next_shared_sweep = now + SWEEP_EVERY;
        let ours: Vec<u32> = (self.slots.iter().flat_map(|s| s.workers()))
            .map(|w| w.pid.as_raw() as u32)
            .collect();
        let shared = self.shared_state;
        if shared.reclaim(|pid| !ours.contains(&pid) && !alive(pid)).permits > 0 {
            shared.bell.ring();
        }
        let foreign = shared.seat_holders().iter().any(|pid| !ours.contains(pid));
        if foreign || self.phase != super::Phase::Running {
            return;
        }
        let mut in_use = BTreeSet::new();
        for config in std::iter::once(&self.config).chain(&self.previous) {
            keys_of(&Labels::of(config), &mut in_use);
        }
        for worker in self.slots.iter().flat_map(|s| s.workers()) {
            keys_of(&worker.labels, &mut in_use);
        }
        for (row, _) in shared
            .rows()
            .filter(|(_, key)| !in_use.contains(key))
            .collect::<Vec<_>>()
        {
            shared.free(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_gets_its_rows_and_caps_and_keeps_them_across_prepares() {
        let shared = Shared::create().unwrap();
        let text = "[[server]]\nlisten = [\"127.0.0.1:8080\"]\n[[server.route]]\nprefix = \"/\"\nupstream = \"app\"\n[upstream.app]\nservers = [\"127.0.0.1:3000 max_conns=2\", \"127.0.0.1:3001\"]\n";
        let config = crate::config::load_text(std::path::Path::new("shoal.toml"), text).unwrap();
        prepare(shared, &config).unwrap();
        let capped = shared.find(RowKey::cap("app", &"127.0.0.1:3000")).unwrap();
        assert_eq!(shared.cap(capped).cap(), 2);
        assert!(shared.find(RowKey::line("app")).is_some());
        assert_eq!(
            shared.find(RowKey::cap("app", &"127.0.0.1:3001")),
            None,
            "not capped"
        );
        shared.cap(capped).take(7, 0).unwrap();
        prepare(shared, &config).unwrap();
        assert_eq!(shared.cap(capped).in_flight(), 1, "a reload keeps what is held");
        let mut keys = BTreeSet::new();
        keys_of(&Labels::of(&config), &mut keys);
        assert!(keys.contains(&RowKey::line("app")) && keys.len() == 3, "{keys:?}");
    }
}
