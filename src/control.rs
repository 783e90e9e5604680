//! `shoal stop | quit | reload | reopen | upgrade | cache purge`: what an operator asks a
//! running master, found through its pid file.
//!
//! `reload` and `upgrade` go through the control socket beside the pid file and wait for the
//! master's verdict (the new generation serves, or why not), so the command's exit code tells
//! whether it worked; a master without a control socket for them gets the signal instead.
//! `cache purge` goes through the socket only. The others are signals. Both sides share the
//! wire types here: the request is one line (`reload\n`, `upgrade\n`, `purge PREFIX\n`), the
//! answer one JSON line ([`Verdict`], [`PurgeVerdict`]).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The request line that asks for a reload and its verdict.
pub const RELOAD_REQUEST: &[u8] = b"reload\n";
/// The request line that asks for a binary upgrade and its verdict.
pub const UPGRADE_REQUEST: &[u8] = b"upgrade\n";
/// The start of the request line that asks for a cache purge: the prefix and `\n` follow.
pub const PURGE_REQUEST: &[u8] = b"purge ";
/// How long the command waits for a verdict unless told otherwise (`--timeout`): longer than
/// a reload's workers take to boot, and than an upgrade's 30 s readiness timeout.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest verdict the command reads.
const MAX_VERDICT_BYTES: usize = 64 * 1024;

/// What an operator asks a running master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Graceful stop (SIGTERM).
    Stop,
    /// Graceful stop (SIGQUIT), as nginx names it.
    Quit,
    /// Re-read the config (SIGHUP, or `reload` on the control socket).
    Reload,
    /// Reopen log files (SIGUSR1).
    Reopen,
    /// Binary upgrade (SIGUSR2, or `upgrade` on the control socket).
    Upgrade,
}

impl Action {
    /// The signal that carries the action.
    pub fn signal(self) -> Signal {
        match self {
            Action::Stop => Signal::SIGTERM,
            Action::Quit => Signal::SIGQUIT,
            Action::Reload => Signal::SIGHUP,
            Action::Reopen => Signal::SIGUSR1,
            Action::Upgrade => Signal::SIGUSR2,
        }
    }

    /// The control socket request that carries the action and brings back its verdict.
    pub fn request(self) -> Option<&'static [u8]> {
        match self {
            Action::Reload => Some(RELOAD_REQUEST),
            Action::Upgrade => Some(UPGRADE_REQUEST),
            _ => None,
        }
    }

    /// The action's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Quit => "quit",
            Action::Reload => "reload",
            Action::Reopen => "reopen",
            Action::Upgrade => "upgrade",
        }
    }
}

/// How a reload or an upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new generation serves (every new worker beats; for an upgrade, the new master is
    /// ready).
    Serving,
    /// Not even started: a bad config (`FILE:LINE:COL: message`), a taken address, an
    /// upgrade already under way. The running generation keeps serving.
    Refused,
    /// Started, then undone: the new workers could not boot, or the new master failed. The
    /// running generation keeps serving.
    RolledBack,
    /// The master began to stop before the outcome was known.
    Abandoned,
}

/// The master's answer to `reload` or `upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    /// What happened, in one line (for a refused config, `FILE:LINE:COL: message`).
    pub message: String,
}

impl Verdict {
    pub fn new(outcome: Outcome, message: impl fmt::Display) -> Verdict {
        Verdict {
            outcome,
            message: message.to_string(),
        }
    }

    /// The verdict as sent on the control socket: one JSON line.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// The command's exit code: 0 serving, 2 refused or rolled back (the same cause would
    /// fail again), 1 abandoned.
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            Outcome::Serving => 0,
            Outcome::Refused | Outcome::RolledBack => 2,
            Outcome::Abandoned => 1,
        }
    }
}

/// The master's answer to `purge PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PurgeVerdict {
    /// The entries whose keys start with the prefix are gone.
    Purged { removed: u64, bytes: u64 },
    /// Not begun: a malformed prefix, or no `[cache]` in the config in force.
    Refused { message: String },
    /// The cache directory could not be listed.
    Failed { message: String },
}

impl PurgeVerdict {
    /// The verdict as sent on the control socket (and in the admin endpoint's body): one
    /// JSON line.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// The command's exit code: 0 purged, 2 refused (asking again would not help), 1 failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            PurgeVerdict::Purged { .. } => 0,
            PurgeVerdict::Refused { .. } => 2,
            PurgeVerdict::Failed { .. } => 1,
        }
    }
}

/// Asks the master whose pid is in `pid_file` to purge the cache entries whose keys start
/// with `prefix`, and waits (at most `timeout`) for its verdict.
pub fn purge(pid_file: &Path, prefix: &str, timeout: Duration) -> Result<(Pid, PurgeVerdict), ControlError> {
    let pid = read_pid(pid_file)?;
    let socket = crate::status::socket_path(pid_file);
    let mut request = PURGE_REQUEST.to_vec();
    request.extend_from_slice(prefix.as_bytes());
    request.push(b'\n');
    let answer = UnixStream::connect(&socket)
        .and_then(|stream| exchange(stream, &request, timeout))
        .map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                ControlError::Timeout(pid, socket.clone(), timeout)
            }
            _ => ControlError::Exchange(pid, socket.clone(), e),
        })?;
    if answer.is_empty() {
        return Err(ControlError::NoVerdict(pid));
    }
    serde_json::from_str(&answer)
        .map(|verdict| (pid, verdict))
        .map_err(|_| ControlError::Decode(pid, answer.trim().to_string()))
}

/// What became of a request to a running master.
#[derive(Debug)]
pub enum Delivery {
    /// The master's verdict.
    Verdict(Pid, Verdict),
    /// The signal was sent; `unverified` says why no verdict can follow, if one was wanted.
    Signalled(Pid, Option<String>),
}

/// Why the request could not be delivered or answered.
#[derive(Debug)]
pub enum ControlError {
    /// The pid file could not be read.
    ReadPidFile(std::io::Error),
    /// The pid file does not hold a process id.
    BadPidFile(String),
    /// kill() failed (typically: no such process, a stale pid file).
    Kill(Pid, nix::Error),
    /// Sending the request or reading the verdict failed.
    Exchange(Pid, PathBuf, std::io::Error),
    /// No verdict came within the timeout.
    Timeout(Pid, PathBuf, Duration),
    /// The master closed the connection without a verdict.
    NoVerdict(Pid),
    /// The answer is not a verdict.
    Decode(Pid, String),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::ReadPidFile(e) => write!(f, "cannot read the pid file: {e}"),
            ControlError::BadPidFile(text) => write!(f, "the pid file holds `{text}`, not a process id"),
            ControlError::Kill(pid, e) => write!(f, "kill() failed for master pid {pid}: {e}"),
            ControlError::Timeout(pid, socket, timeout) => write!(
                f,
                "no verdict from shoal master {pid} on {} within {:?}; it may still be under way: \
                 see `shoal status` and its error log",
                socket.display(),
                timeout
            ),
            ControlError::Exchange(pid, socket, e) => {
                write!(f, "asking shoal master {pid} on {} failed: {e}", socket.display())
            }
            ControlError::NoVerdict(pid) => write!(
                f,
                "shoal master {pid} closed its control socket without a verdict (did it stop?): see its error log"
            ),
            ControlError::Decode(pid, text) => {
                write!(f, "shoal master {pid} answered `{text}`, not a verdict")
            }
        }
    }
}

/// The master's pid from `pid_file`.
fn read_pid(pid_file: &Path) -> Result<Pid, ControlError> {
    let text = std::fs::read_to_string(pid_file).map_err(ControlError::ReadPidFile)?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| ControlError::BadPidFile(text.trim().to_string()))?;
    if pid <= 1 {
        return Err(ControlError::BadPidFile(text.trim().to_string()));
    }
    Ok(Pid::from_raw(pid))
}

/// Sends `action`'s signal to the master whose pid is in `pid_file`; returns that pid.
pub fn send(action: Action, pid_file: &Path) -> Result<Pid, ControlError> {
    let pid = read_pid(pid_file)?;
    kill(pid, action.signal()).map_err(|e| ControlError::Kill(pid, e))?;
    Ok(pid)
}

/// Asks the master whose pid is in `pid_file` to carry out `action`. Reload and upgrade go
/// through its control socket and wait (at most `timeout`) for the verdict; when no control
/// socket takes the request (none there, or a master too old to know it), the signal is sent
/// instead and the delivery says why there is no verdict. Other actions are signals.
pub fn ask(action: Action, pid_file: &Path, timeout: Duration) -> Result<Delivery, ControlError> {
    let Some(request) = action.request() else {
        return send(action, pid_file).map(|pid| Delivery::Signalled(pid, None));
    };
    let pid = read_pid(pid_file)?;
    let socket = crate::status::socket_path(pid_file);
    let unverified = match UnixStream::connect(&socket) {
        Ok(stream) => match exchange(stream, request, timeout) {
            Ok(answer) if answer.is_empty() => return Err(ControlError::NoVerdict(pid)),
            Ok(answer) => match serde_json::from_str::<Verdict>(&answer) {
                Ok(verdict) => return Ok(Delivery::Verdict(pid, verdict)),
                // A master from before verdicts answers only `status`.
                Err(_) if answer.starts_with("unknown request") => {
                    format!("the master on {} does not give verdicts", socket.display())
                }
                Err(_) => return Err(ControlError::Decode(pid, answer.trim().to_string())),
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ControlError::Timeout(pid, socket, timeout))
            }
            Err(e) => return Err(ControlError::Exchange(pid, socket, e)),
        },
        Err(e) => format!("no control socket answers on {}: {e}", socket.display()),
    };
    kill(pid, action.signal()).map_err(|e| ControlError::Kill(pid, e))?;
    Ok(Delivery::Signalled(pid, Some(unverified)))
}

/// Sends `request` and reads the answer until the master closes the connection.
fn exchange(mut stream: UnixStream, request: &[u8], timeout: Duration) -> std::io::Result<String> {
    // One deadline for the whole exchange (a read timeout alone restarts at every byte).
    let deadline = std::time::Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(std::io::Error::from(ErrorKind::TimedOut))
    };
    stream.set_write_timeout(Some(left()?))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if answer.len() + n > MAX_VERDICT_BYTES => return Err(ErrorKind::InvalidData.into()),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_one_json_line_and_decides_the_exit_code() {
        let verdict = Verdict::new(Outcome::Refused, "shoal.toml:2:1: unknown field `x`");
        let line = verdict.to_line();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"outcome\":\"refused\",\"message\":\"shoal.toml:2:1: unknown field `x`\"}\n"
        );
        assert_eq!(serde_json::from_slice::<Verdict>(&line).unwrap(), verdict);
        let codes = [
            (Outcome::Serving, 0),
            (Outcome::Refused, 2),
            (Outcome::RolledBack, 2),
            (Outcome::Abandoned, 1),
        ];
        for (outcome, code) in codes {
            assert_eq!(Verdict::new(outcome, "").exit_code(), code, "{outcome:?}");
        }
    }

    #[test]
    fn a_purge_verdict_is_one_json_line_tagged_by_its_outcome() {
        let purged = PurgeVerdict::Purged {
            removed: 3,
            bytes: 4096,
        };
        let line = purged.to_line();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"outcome\":\"purged\",\"removed\":3,\"bytes\":4096}\n"
        );
        assert_eq!(serde_json::from_slice::<PurgeVerdict>(&line).unwrap(), purged);
        let refused = PurgeVerdict::Refused { message: "no".into() };
        assert_eq!((purged.exit_code(), refused.exit_code()), (0, 2));
    }
}
