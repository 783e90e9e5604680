//! The `shoal` command: parses flags, builds the config, hands over to the master.
//!
//! Exit codes are a contract: 0 clean stop, 1 runtime failure, 2 bad config or failed boot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::config::{self, QuickOptions, Source};
use shoal::control::{self, Action};

/// A prefork static file server and reverse proxy.
///
/// With no arguments, serves the current directory on http://127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML); -l, -r and -u build a config without one.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable) [default: 127.0.0.1:8080].
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
}

#[derive(Subcommand)]
enum Command {
    /// Graceful stop of a running shoal (SIGTERM to the master in the pid file).
    Stop(Target),
    /// Graceful stop, nginx's name for it (SIGQUIT).
    Quit(Target),
    /// Re-read the config; a bad one is logged and the old one keeps serving (SIGHUP).
    Reload(Target),
    /// Reopen log files after rotation (SIGUSR1).
    Reopen(Target),
    /// Replace the running binary with the one on disk, without dropping a connection (SIGUSR2).
    Upgrade(Target),
    /// Validate a config file: exit 0, or print FILE:LINE:COL: message and exit 2.
    Check {
        /// Config file to check.
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            default_value = "shoal.toml"
        )]
        config: PathBuf,
    },
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
        Some(Command::Check { config }) => check(&config),
        Some(Command::Stop(target)) => control(Action::Stop, &target),
        Some(Command::Quit(target)) => control(Action::Quit, &target),
        Some(Command::Reload(target)) => control(Action::Reload, &target),
        Some(Command::Reopen(target)) => control(Action::Reopen, &target),
        Some(Command::Upgrade(target)) => control(Action::Upgrade, &target),
        None => run(cli),
    }
}

fn control(action: Action, target: &Target) -> ExitCode {
    let from_config = || {
        let path = target.config.as_ref()?;
        config::load_file(path).ok()?.pid_file
    };
    let pid_file = target
        .pid_file
        .clone()
        .or_else(from_config)
        .unwrap_or_else(|| PathBuf::from("shoal.pid"));
    match control::send(action, &pid_file) {
        Ok(pid) => {
            println!("sent {} to shoal master {pid}", action.signal());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal: {}: {e}", pid_file.display());
            ExitCode::from(1)
        }
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

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
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
    }
}
