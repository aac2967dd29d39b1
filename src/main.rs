//! The `shardgate` command line: `run` (the default) and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mimalloc::MiMalloc;

use shardgate::config;
use shardgate::shard::{self, RunError, RunOptions};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Sharded thread-per-core network appliance: DNS address service by source
/// view. With no command, `run` on the embedded default configuration.
#[derive(Parser, Debug)]
#[command(
    name = "shardgate",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve (the default command). SIGHUP reloads the config file,
    /// SIGTERM/SIGINT stop gracefully.
    Run(RunArgs),
    /// Validate a configuration file: exit 0 when valid, otherwise print
    /// every problem as FILE:LINE: key: message and exit 2.
    CheckConfig {
        /// The TOML configuration file to check.
        file: PathBuf,
    },
    /// Invoke a function over UDP or HTTP and print its output (exit 1 when
    /// the function fails, 2 on bad arguments, 3 when nothing answers).
    Invoke(shardgate::functions::client::InvokeCli),
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// Configuration file (TOML); without it, the embedded default is served.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of shards (pinned executors); default: server.shards, or one
    /// per online CPU.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,
}

/// Exit status for an invalid configuration.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Invoke(args)) => shardgate::functions::client::main(args),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(args: RunArgs) -> ExitCode {
    let opts = RunOptions {
        config: args.config,
        shards: args.shards.map(usize::from),
    };
    match shard::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config { source, problems }) => {
            for p in &problems {
                eprintln!("{}", shard::format_problem(&source, p));
            }
            eprintln!(
                "shardgate: {source}: {} problem(s); fix them (`shardgate check-config FILE` re-checks) and start again",
                problems.len()
            );
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
        Err(RunError::Runtime(e)) => {
            eprintln!("shardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let source = file.display().to_string();
    match config::load_file(file) {
        Ok(loaded) => {
            println!(
                "{source}: valid ({} zone(s), {} view(s))",
                loaded.config.zones.len(),
                loaded.config.views.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                println!("{}", shard::format_problem(&source, p));
            }
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}
