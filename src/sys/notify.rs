//! systemd's notification protocol (sd_notify): one datagram per state change on the socket
//! named by `NOTIFY_SOCKET`, and watchdog pings when `WATCHDOG_USEC` is set.
//!
//! Without `NOTIFY_SOCKET` every call does nothing, so the master can always call it.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if there is one.
pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    /// How often the watchdog must hear from us (half of `WATCHDOG_USEC`), if asked.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`), then removes them
    /// from the environment so workers and upgraded masters do not inherit a stale socket.
    pub fn from_env() -> Notifier {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty());
        let watchdog_for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && watchdog_for_us)
            .map(|usec| Duration::from_micros(usec / 2));
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let socket = path.and_then(|path| Some((UnixDatagram::unbound().ok()?, path)));
        Notifier {
            socket,
            watchdog_every,
        }
    }

    /// Sends `state` (e.g. `READY=1`); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some((socket, path)) = &self.socket else {
            return;
        };
        if let Err(e) = send(socket, path, state) {
            log::warn!("sendto() failed while notifying systemd ({state}): {e}");
        }
    }

    /// `RELOADING=1` with the monotonic timestamp systemd asks for.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

fn send(socket: &UnixDatagram, path: &str, state: &str) -> io::Result<()> {
    // A leading '@' names a socket in the abstract namespace.
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}
