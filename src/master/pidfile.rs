//! The pid file: claimed when the master starts, removed when it exits, unless a newer
//! master (binary upgrade) has taken it over.
//!
//! Two invariants. A pid file that names a live shoal master is never taken over: a second
//! instance started on the same config refuses to start instead of stealing the file and the
//! control socket beside it (a binary upgrade is the one legitimate successor, and it skips
//! the claim). And the file is never written through a symlink: the pid goes into a fresh
//! temporary file beside it (`O_CREAT | O_EXCL`, which never follows a link), renamed over
//! the name, so a link planted in a writable directory cannot make a root master overwrite
//! another file.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use log::info;

/// What `comm` a running master carries (set by `sys::name_process`).
pub const MASTER_NAME: &str = "shoal: master";

/// Why the pid file could not be claimed or written.
#[derive(Debug)]
pub enum PidFileError {
    /// The file names a live shoal master: another instance runs on this pid file.
    Running { path: PathBuf, pid: i32 },
    /// Writing the temporary file or renaming it into place failed.
    Write { path: PathBuf, source: io::Error },
}

impl fmt::Display for PidFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidFileError::Running { path, pid } => write!(
                f,
                "{} names a running shoal master (pid {pid}): stop it first (shoal stop --pid-file {}), \
                 or give this instance another pid_file",
                path.display(),
                path.display()
            ),
            PidFileError::Write { path, source } => write!(f, "cannot write {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PidFileError {}

/// What a pid file found on disk says about the process it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupant {
    /// No file: nothing to replace.
    Nobody,
    /// A live shoal master other than this process.
    Master(i32),
    /// Anything else (dead pid, a pid reused by another program, our own pid, unreadable or
    /// garbled content, a symlink): replaced, with the reason logged.
    Stale(String),
    /// A live process /proc does not describe to us; [`occupant`] asks the control socket.
    Hidden(i32),
}

/// What the process named by a pid file looks like, as far as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Process {
    Dead,
    /// Alive, with its `comm` (`None` when /proc does not show it to us: `hidepid`).
    Alive(Option<String>),
}

/// Decides what a pid file's `text` means (pure; `look` inspects a pid, `own` is our pid).
pub fn judge(text: &str, own: i32, look: impl Fn(i32) -> Process) -> Occupant {
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Occupant::Stale("it does not hold a process id".into());
    };
    if pid <= 0 {
        return Occupant::Stale("it does not hold a process id".into());
    }
    if pid == own {
        // A container restarted with the same pid namespace layout: the old master was us.
        return Occupant::Stale(format!("it names pid {pid}, which is this process"));
    }
    match look(pid) {
        Process::Dead => Occupant::Stale(format!("pid {pid} is not running")),
        Process::Alive(Some(comm)) if comm == MASTER_NAME => Occupant::Master(pid),
        Process::Alive(Some(comm)) => Occupant::Stale(format!("pid {pid} is `{comm}`, not a shoal master")),
        // /proc hides it (hidepid): only its control socket can say what it is.
        Process::Alive(None) => Occupant::Hidden(pid),
    }
}

/// Looks `pid` up in /proc.
fn look(pid: i32) -> Process {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => Process::Alive(Some(comm.trim_end_matches('\n').to_string())),
        Err(_) => match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::ESRCH) => Process::Dead,
            _ => Process::Alive(None),
        },
    }
}

/// Reads the pid file at `path` without following a symlink and judges it.
pub fn occupant(path: &Path) -> Occupant {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Occupant::Nobody,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Occupant::Stale("it is a symlink".into()),
        Err(e) => return Occupant::Stale(format!("it cannot be read ({e})")),
    };
    let mut text = String::new();
    if Read::by_ref(&mut file)
        .take(64)
        .read_to_string(&mut text)
        .is_err()
    {
        return Occupant::Stale("it does not hold a process id".into());
    }
    match judge(&text, std::process::id() as i32, look) {
        Occupant::Hidden(pid) => {
            let socket = crate::status::socket_path(path);
            match crate::status::fetch(&socket) {
                Ok(status) if status.master.pid as i32 == pid => Occupant::Master(pid),
                _ => Occupant::Stale(format!(
                    "pid {pid} is hidden from us and no master answers on {}",
                    socket.display()
                )),
            }
        }
        judged => judged,
    }
}

/// A written pid file; dropping it removes the file if it still names this process.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Claims `path` for a fresh start: refuses when it names a live shoal master, replaces
    /// a stale one (saying why in the log), then writes our pid.
    pub fn claim(path: &Path) -> Result<PidFile, PidFileError> {
        match occupant(path) {
            Occupant::Nobody => {}
            Occupant::Master(pid) | Occupant::Hidden(pid) => {
                return Err(PidFileError::Running {
                    path: path.to_path_buf(),
                    pid,
                })
            }
            Occupant::Stale(why) => info!("pid file {} is stale ({why}); replacing it", path.display()),
        }
        PidFile::write(path)
    }

    /// Writes the current process id to `path`, replacing whatever has the name (a binary
    /// upgrade's new master taking over, or a stale file). Never writes through a symlink.
    pub fn write(path: &Path) -> Result<PidFile, PidFileError> {
        write_replacing(path, format!("{}\n", std::process::id()).as_bytes()).map_err(|source| {
            PidFileError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

/// Writes `bytes` to a new file beside `path` and renames it over `path`. The temporary file
/// is created with `O_EXCL` (a planted link or file under its name is removed, not followed);
/// rename replaces a symlink at `path` itself, never its target.
fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(name);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
    };
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&temporary)?;
            create()?
        }
        other => other?,
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(comm: &str) -> impl Fn(i32) -> Process + '_ {
        move |_| Process::Alive(Some(comm.to_string()))
    }

    #[test]
    fn only_a_live_master_other_than_us_occupies_the_file() {
        let cases: &[(&str, Process, Occupant)] = &[
            (
                "42\n",
                Process::Alive(Some(MASTER_NAME.into())),
                Occupant::Master(42),
            ),
            ("42", Process::Alive(None), Occupant::Hidden(42)),
            (
                "42\n",
                Process::Dead,
                Occupant::Stale("pid 42 is not running".into()),
            ),
            (
                "42\n",
                Process::Alive(Some("bash".into())),
                Occupant::Stale("pid 42 is `bash`, not a shoal master".into()),
            ),
            (
                "42\n",
                Process::Alive(Some("shoal: worker 0".into())),
                Occupant::Stale("pid 42 is `shoal: worker 0`, not a shoal master".into()),
            ),
            (
                "7\n",
                Process::Alive(Some(MASTER_NAME.into())),
                Occupant::Stale("it names pid 7, which is this process".into()),
            ),
            (
                "",
                Process::Dead,
                Occupant::Stale("it does not hold a process id".into()),
            ),
            (
                "-1",
                Process::Dead,
                Occupant::Stale("it does not hold a process id".into()),
            ),
            (
                "root:x:0:0",
                Process::Dead,
                Occupant::Stale("it does not hold a process id".into()),
            ),
        ];
        for (text, process, want) in cases {
            let got = judge(text, 7, |_| process.clone());
            assert_eq!(&got, want, "{text:?} with {process:?}");
        }
        assert_eq!(judge("9", 7, alive(MASTER_NAME)), Occupant::Master(9));
    }

    #[test]
    fn the_pid_file_replaces_a_symlink_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let path = dir.path().join("shoal.pid");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert_eq!(occupant(&path), Occupant::Stale("it is a symlink".into()));
        let planted = dir.path().join(format!("shoal.pid.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let file = PidFile::claim(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert!(!planted.exists(), "the temporary name is gone");
        drop(file);
        assert!(!path.exists(), "removed at exit");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
}
