//! What /proc says about a process: resident memory, credentials, open descriptors, CPU time;
//! a sampler that records their peaks while a test runs; and this test process's own fd limit.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Pause between two samples of [`Sampler`].
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Resident memory of `pid` (VmRSS), in bytes; 0 once the process is gone.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Who `pid` runs as: the Uid, Gid and Groups lines of /proc/PID/status as numbers (real,
/// effective, saved, filesystem ids; supplementary groups).
pub fn credentials(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line in /proc/{pid}/status"))
            .split_whitespace()
            .map(|n| n.parse().expect("an id"))
            .collect()
    };
    (ids("Uid:"), ids("Gid:"), ids("Groups:"))
}

/// Open file descriptors of `pid`; 0 once the process is gone.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// CPU time `pid` has used so far (user + system, all threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // Field 2 (the name, in parentheses) may hold spaces: count fields after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a ')' in /proc/PID/stat")
        .1
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields[i].parse::<u64>().expect("a number in /proc/PID/stat");
    ticks(11) + ticks(12)
}

/// Clock ticks per second of [`cpu_ticks`] (`getconf CLK_TCK`).
pub fn ticks_per_second() -> u64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("getconf CLK_TCK prints a number")
}

/// Raises this test process's soft RLIMIT_NOFILE to at least `needed` descriptors.
pub fn raise_open_files_limit(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(RLIMIT_NOFILE)");
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open files but the hard limit is {hard} (raise it: ulimit -Hn)"
    );
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).expect("setrlimit(RLIMIT_NOFILE)");
}

/// The highest values seen by a [`Sampler`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub rss_bytes: u64,
    pub open_fds: usize,
}

/// Samples a process's RSS and fd count in a thread until stopped, keeping the peaks.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Peaks>>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            while !stopping.load(Ordering::SeqCst) {
                peaks.rss_bytes = peaks.rss_bytes.max(rss_bytes(pid));
                peaks.open_fds = peaks.open_fds.max(open_fds(pid));
                std::thread::sleep(SAMPLE_EVERY);
            }
            peaks
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the peaks.
    pub fn stop(mut self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("sampler thread")
            .join()
            .expect("sampler thread panicked")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Mebibytes, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
