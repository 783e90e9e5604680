//! The `shoal` command: parses flags, builds the config, hands over to the master.
//!
//! Exit codes are a contract: 0 clean stop, 1 runtime failure, 2 bad config or failed boot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::config::{self, QuickOptions, Source};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        None => run(cli),
    }
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
