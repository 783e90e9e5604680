//! The `shoal` command: parses flags, builds the config, hands over to the master.
//!
//! Exit codes are a contract: 0 clean stop, 1 runtime failure, 2 bad config or failed boot.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::config::{self, QuickOptions, Source};
use shoal::control::{self, Action, Delivery, Outcome, PurgeVerdict, VERDICT_TIMEOUT};
use shoal::status;

/// A prefork static file server and reverse proxy.
///
/// With no arguments, serves the current directory on http://127.0.0.1:8080.
#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about,
    long_about = None,
    after_help = EXAMPLES,
    after_long_help = REFERENCE
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML); -l, -r and -u build a config without one.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable): IP:PORT, or unix:/path for a unix socket [default: 127.0.0.1:8080].
    #[arg(short = 'l', long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// Directory to serve [default: current directory].
    #[arg(short = 'r', long = "root", value_name = "DIR")]
    root: Option<PathBuf>,
    /// Upstream server to proxy to (repeatable).
    #[arg(short = 'u', long = "upstream", value_name = "ADDR")]
    upstream: Vec<String>,
    /// Number of worker processes [default: number of CPUs].
    #[arg(short = 'w', long = "workers", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Write the master's pid to FILE.
    #[arg(long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Run the workers as USER (name or uid), in GROUP or USER's own group; overrides the
    /// config's user and group. Started as root, shoal needs this or `user` (even "root").
    #[arg(short = 'U', long = "user", value_name = "USER[:GROUP]")]
    user: Option<String>,
}

const EXAMPLES: &str = "Examples:
  shoal -r public -l 0.0.0.0:8080           serve a directory
  shoal -c /etc/shoal.toml                  run from a config file
  shoal status --pid-file /run/shoal.pid    the master and every worker, as a table
  shoal top -c /etc/shoal.toml              the same table, redrawn every second

More (signals, environment, exit codes): shoal --help";

/// `shoal --help`: the examples, then what an operator needs without opening the docs.
const REFERENCE: &str = "Examples:
  shoal                                     serve the current directory on 127.0.0.1:8080
  shoal -r public -l 0.0.0.0:8080           serve a directory
  shoal -r public -u 127.0.0.1:3000         files first; what is missing goes to the app
  shoal -u 127.0.0.1:3000 -u 127.0.0.1:3001 proxy everything to two app servers
  shoal -c /etc/shoal.toml                  run from a config file (shoal check -c it first)
  shoal -U nobody -r www -l 0.0.0.0:80      as root: bind port 80, serve as nobody
  shoal status --pid-file /run/shoal.pid    the master and every worker, as a table
  shoal top -c /etc/shoal.toml              the same table, redrawn every second

Signals to the master (stop, quit and reopen send them via the pid file; reload and upgrade ask
through the control socket beside it and wait for the master's verdict):
  TERM, QUIT   graceful stop: finish in-flight requests within shutdown_timeout, exit 0
  INT          fast stop (also a second TERM)
  HUP          reload the config; a bad one is logged and the running one kept
  USR1         reopen the access and error log files (after rotation)
  USR2         binary upgrade: start the binary on disk with the same sockets
  TTIN, TTOU   one worker more, one fewer

Environment:
  RUST_LOG                               error log level: error, warn, info (default), debug
  NOTIFY_SOCKET, WATCHDOG_USEC           systemd Type=notify: READY, RELOADING, STOPPING,
                                         WATCHDOG, MAINPID after an upgrade
  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES systemd socket activation: serve the passed sockets

Exit codes: 0 clean stop, 1 runtime failure (workers kept crashing), 2 bad config or failed
boot (never worth restarting). Every config key, with its default: docs/operations.md.";

#[derive(Subcommand)]
enum Command {
    /// Graceful stop of a running shoal (SIGTERM to the master in the pid file).
    #[command(after_help = "Examples:
  shoal stop --pid-file /run/shoal/shoal.pid
  shoal stop -c /etc/shoal.toml          the master named by the config's pid_file")]
    Stop(Target),
    /// Graceful stop, nginx's name for it (SIGQUIT).
    #[command(after_help = "Example:
  shoal quit --pid-file /run/shoal/shoal.pid")]
    Quit(Target),
    /// Re-read the config and wait for the master's verdict
    ///
    /// Asks through the control socket beside the pid file (SIGHUP when there is none) and
    /// exits 0 once the new workers serve; 2 with the master's FILE:LINE:COL: message when it
    /// refused the config or rolled it back (the running config keeps serving); 1 when no
    /// verdict came within --timeout.
    #[command(after_help = "Example:
  shoal reload -c /etc/shoal.toml        prints `reload: generation 2 serves with 4 workers ...`")]
    Reload(Verdicted),
    /// Reopen log files after rotation (SIGUSR1).
    #[command(after_help = "Example (what deploy/logrotate.conf does):
  mv access.log access.log.1 && shoal reopen --pid-file /run/shoal/shoal.pid")]
    Reopen(Target),
    /// Replace the running binary with the one on disk, without dropping a connection
    ///
    /// Asks through the control socket beside the pid file (SIGUSR2 when there is none) and
    /// exits 0 once the new master serves; 2 when it could not start or failed (the running
    /// master keeps serving); 1 when no verdict came within --timeout.
    #[command(
        after_help = "Example (replace the file by rename, then upgrade; the pid file names the new \
                      master once it serves):
  install -m 755 shoal-new /usr/local/bin/shoal && shoal upgrade --pid-file /run/shoal/shoal.pid"
    )]
    Upgrade(Verdicted),
    /// Show the master and every worker: pid, state, uptime, memory, requests, restarts
    ///
    /// Asks the running master over its control socket, which sits beside the pid file
    /// (shoal.pid -> shoal.sock, owner-only). Exits 1 when no master answers.
    ///
    /// Examples:
    ///   shoal status --pid-file /run/shoal.pid
    ///   shoal status -c /etc/shoal.toml --json | jq '.workers[].requests'
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the status as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The status table, redrawn every second until Ctrl-C
    ///
    /// Example:
    ///   shoal top --pid-file /run/shoal.pid
    #[command(verbatim_doc_comment)]
    Top {
        #[command(flatten)]
        target: Target,
        /// Stop after N redraws [default: until Ctrl-C].
        #[arg(short = 'n', long = "iterations", value_name = "N")]
        iterations: Option<u64>,
    },
    /// Act on the running instance's response cache
    #[command(
        subcommand,
        after_help = "Example:
  shoal cache purge -c /etc/shoal.toml /images/    remove the entries of /images/... on every host"
    )]
    Cache(CacheCommand),
    /// Validate a config file and what starting with it needs: exit 0, or print the first
    /// problem and exit 2
    ///
    /// Besides the file itself (FILE:LINE:COL: message), checks what start-up checks, as
    /// this user: who the workers run as (started as root, `user` is needed), that the pid
    /// file and log files can be created, that every listen address is free (or held by the
    /// instance this config runs), and that the workers' user can open every root and the
    /// access log. Run it as the user, and with the -U, that start shoal.
    #[command(after_help = "Example:
  shoal check -c /etc/shoal.toml         prints `/etc/shoal.toml: ok` or the first error")]
    Check {
        /// Config file to check.
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            default_value = "shoal.toml"
        )]
        config: PathBuf,
        /// The pid file start-up would be given (overrides the config's pid_file).
        #[arg(long = "pid-file", value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// The -U start-up would be given (overrides the config's user and group).
        #[arg(short = 'U', long = "user", value_name = "USER[:GROUP]")]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove the entries whose keys start with PREFIX, and wait until they are gone
    ///
    /// A key is scheme://host/target as the client sent it. PREFIX is either such a URL
    /// start (https://shop.example/images/) or a path start (/images/), which matches on every
    /// host and scheme. Asks through the control socket beside the pid file; exits 0 once the
    /// entries are gone (printing how many), 2 when the master refused (a malformed prefix,
    /// no [cache]), 1 when it failed or did not answer within --timeout. The admin
    /// listener takes the same purge: `curl -X DELETE 'http://ADMIN/cache?prefix=/images/'`.
    #[command(after_help = "Examples:
  shoal cache purge -c /etc/shoal.toml https://shop.example/products/42
  shoal cache purge --pid-file /run/shoal/shoal.pid /assets/")]
    Purge {
        /// https://host/path... or /path...
        prefix: String,
        #[command(flatten)]
        verdicted: Verdicted,
    },
}

/// A control command that waits for the master's verdict.
#[derive(clap::Args)]
struct Verdicted {
    #[command(flatten)]
    target: Target,
    /// How long to wait for the verdict (500ms, 30s, 2m).
    #[arg(long = "timeout", value_name = "DURATION", default_value = "60s", value_parser = duration)]
    timeout: std::time::Duration,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    config::units::parse_duration(text)
}

/// Which running shoal a control command talks to.
#[derive(clap::Args)]
struct Target {
    /// Pid file of the running master [default: the config's pid_file, else shoal.pid].
    #[arg(long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Config whose pid_file names the master.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Check {
            config,
            pid_file,
            user,
        }) => check(config, pid_file, user),
        Some(Command::Stop(target)) => control(Action::Stop, &target, VERDICT_TIMEOUT),
        Some(Command::Quit(target)) => control(Action::Quit, &target, VERDICT_TIMEOUT),
        Some(Command::Reload(v)) => control(Action::Reload, &v.target, v.timeout),
        Some(Command::Reopen(target)) => control(Action::Reopen, &target, VERDICT_TIMEOUT),
        Some(Command::Upgrade(v)) => control(Action::Upgrade, &v.target, v.timeout),
        Some(Command::Status { target, json }) => status(&target, json),
        Some(Command::Top { target, iterations }) => top(&target, iterations),
        Some(Command::Cache(CacheCommand::Purge { prefix, verdicted })) => purge(&prefix, &verdicted),
        None => run(cli),
    }
}

impl Target {
    /// `--pid-file`, else the pid_file of `-c FILE`, else `shoal.pid`.
    fn pid_file(&self) -> PathBuf {
        let from_config = || {
            let path = self.config.as_ref()?;
            config::load_file(path).ok()?.pid_file
        };
        self.pid_file
            .clone()
            .or_else(from_config)
            .unwrap_or_else(|| PathBuf::from("shoal.pid"))
    }
}

fn control(action: Action, target: &Target, timeout: std::time::Duration) -> ExitCode {
    let pid_file = target.pid_file();
    match control::ask(action, &pid_file, timeout) {
        Ok(Delivery::Verdict(pid, verdict)) => {
            let name = action.name();
            match verdict.outcome {
                Outcome::Serving => println!("{name}: {} (master {pid})", verdict.message),
                Outcome::Refused => eprintln!(
                    "shoal: {name} refused, still serving as before: {}",
                    verdict.message
                ),
                Outcome::RolledBack => {
                    eprintln!(
                        "shoal: {name} rolled back, still serving as before: {}",
                        verdict.message
                    )
                }
                Outcome::Abandoned => eprintln!("shoal: {name} abandoned: {}", verdict.message),
            }
            ExitCode::from(verdict.exit_code())
        }
        Ok(Delivery::Signalled(pid, unverified)) => {
            println!("sent {} to shoal master {pid}", action.signal());
            if let Some(why) = unverified {
                eprintln!("shoal: no verdict ({why}): the master's error log says how it went");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal: {}: {e}", pid_file.display());
            ExitCode::from(1)
        }
    }
}

fn purge(prefix: &str, verdicted: &Verdicted) -> ExitCode {
    let pid_file = verdicted.target.pid_file();
    match control::purge(&pid_file, prefix, verdicted.timeout) {
        Ok((pid, verdict)) => {
            match &verdict {
                PurgeVerdict::Purged { removed, bytes } => {
                    println!("purge: removed {removed} entries ({bytes} bytes) (master {pid})")
                }
                PurgeVerdict::Refused { message } => eprintln!("shoal: purge refused: {message}"),
                PurgeVerdict::Failed { message } => eprintln!("shoal: purge failed: {message}"),
            }
            ExitCode::from(verdict.exit_code())
        }
        Err(e) => {
            eprintln!("shoal: {}: {e}", pid_file.display());
            ExitCode::from(1)
        }
    }
}

fn status(target: &Target, json: bool) -> ExitCode {
    let socket = status::socket_path(&target.pid_file());
    let shown = if json {
        status::fetch(&socket).map(|s| serde_json::to_string_pretty(&s).unwrap_or_default() + "\n")
    } else {
        status::fetch(&socket).map(|s| status::table(&s))
    };
    match shown {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal: {e}");
            ExitCode::from(1)
        }
    }
}

fn top(target: &Target, iterations: Option<u64>) -> ExitCode {
    use std::io::Write;
    let socket = status::socket_path(&target.pid_file());
    let mut drawn = 0;
    loop {
        match status::fetch(&socket) {
            // Home, clear the screen, then the table: a plain ANSI terminal is enough.
            Ok(s) => print!("\x1b[H\x1b[2J{}\n(every 1s; Ctrl-C to quit)\n", status::table(&s)),
            Err(e) => {
                eprintln!("shoal: {e}");
                return ExitCode::from(1);
            }
        }
        let _ = std::io::stdout().flush();
        drawn += 1;
        if iterations.is_some_and(|n| drawn >= n) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Log lines carry the pid, so an old and a new master (binary upgrade) and their workers
/// can be told apart in one stream.
fn init_logging() {
    use std::io::Write;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| {
            let time = out.timestamp_seconds();
            writeln!(
                out,
                "{time} {} shoal[{}]: {}",
                record.level(),
                std::process::id(),
                record.args()
            )
        })
        .init();
}

/// `shoal check`: the config as start-up would load it (same overrides), then what start-up
/// will check before it serves.
fn check(path: PathBuf, pid_file: Option<PathBuf>, user: Option<String>) -> ExitCode {
    let source = Source {
        file: Some(path.clone()),
        pid_file,
        user,
        ..Source::default()
    };
    let mut config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match shoal::master::preflight(&mut config) {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    let source = config_source(&cli);
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(2);
        }
    };
    match shoal::master::run(config, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn config_source(cli: &Cli) -> Source {
    Source {
        file: cli.config.clone(),
        quick: QuickOptions {
            listen: cli.listen.clone(),
            root: cli.root.clone(),
            upstreams: cli.upstream.clone(),
        },
        workers: cli.workers.map(usize::from),
        pid_file: cli.pid_file.clone(),
        user: cli.user.clone(),
    }
}
