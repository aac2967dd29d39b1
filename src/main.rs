//! The `shardgate` command line: `run` (the default), `check-config`,
//! `invoke` and `ctl` (control a running server through its admin API).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mimalloc::MiMalloc;

use shardgate::node::{self, RunError, RunOptions};
use shardgate::shard;
use shardgate::{addrmap, config};

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
    /// Validate a configuration file, including that every function module
    /// exists and compiles: exit 0 when valid, otherwise print every problem
    /// as FILE:LINE: key: message and exit 2.
    CheckConfig {
        /// The TOML configuration file to check.
        #[arg(default_value = shardgate::ctl::DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Control a running shardgate through its admin API (address and token
    /// from the config file). Exit 0 done, 1 refused or failed (e.g. a
    /// rejected reload), 2 usage or config error, 3 server unreachable.
    Ctl(shardgate::ctl::CtlArgs),
    /// Write the man pages (shardgate.1, shardgate-SUBCOMMAND.1) into DIR
    /// (scripts/package.sh does, for the Debian package).
    #[command(hide = true)]
    GenerateMan {
        /// Output directory (created when missing).
        dir: PathBuf,
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
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            shardgate::logging::init(&config::LogConfig::default());
            check_config(&file)
        }
        Some(Command::Invoke(args)) => {
            shardgate::logging::init(&config::LogConfig::default());
            shardgate::functions::client::main(args)
        }
        Some(Command::Ctl(args)) => {
            shardgate::logging::init(&config::LogConfig {
                level: "warn".into(),
                ..Default::default()
            });
            shardgate::ctl::main(args)
        }
        Some(Command::GenerateMan { dir }) => generate_man(&dir),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

/// Man pages for the command and every visible subcommand.
fn generate_man(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    let result =
        std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "shardgate: cannot write man pages into {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// The `[log]` table of the config file `run` will load, read leniently
/// before logging starts (a broken file is reported by the full load that
/// follows).
fn log_config(file: Option<&std::path::Path>) -> config::LogConfig {
    #[derive(serde::Deserialize, Default)]
    struct OnlyLog {
        #[serde(default)]
        log: Option<config::LogConfig>,
    }
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| toml::from_str::<OnlyLog>(&text).ok())
        .and_then(|o| o.log)
        .filter(|l| config::valid_log_level(&l.level))
        .unwrap_or_default()
}

fn run(args: RunArgs) -> ExitCode {
    shardgate::logging::init(&log_config(args.config.as_deref()));
    let opts = RunOptions {
        config: args.config,
        shards: args.shards.map(usize::from),
    };
    // Fatal lines reach journald at error priority (`<3>`), like the logs.
    let err = if shardgate::logging::stderr_is_journal() {
        shardgate::logging::priority(&tracing::Level::ERROR)
    } else {
        ""
    };
    match node::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config { source, problems }) => {
            for p in &problems {
                eprintln!("{err}{}", shard::format_problem(&source, p));
            }
            eprintln!(
                "{err}shardgate: {source}: {} problem(s); fix them (`shardgate check-config FILE` re-checks) and start again",
                problems.len()
            );
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
        Err(RunError::Runtime(e)) => {
            eprintln!("{err}shardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let source = file.display().to_string();
    match addrmap::load_file(file) {
        Ok(loaded) => {
            let base_dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            let functions = match check_functions(&loaded.config, base_dir) {
                Ok(n) => n,
                Err(problems) => {
                    for p in &problems {
                        println!("{source}: {p}");
                    }
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            println!(
                "{source}: valid ({} zone(s), {} view(s), {functions} function(s) compiled)",
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

/// Compile every function the configuration names (without touching the
/// compile cache): the number compiled, or why each failed.
fn check_functions(
    config: &config::Config,
    base_dir: &std::path::Path,
) -> Result<usize, Vec<String>> {
    let mut config = config.clone();
    config.functions.cache_dir = PathBuf::new();
    match shardgate::functions::FunctionNode::for_run(&config, base_dir, 1) {
        Ok(None) => Ok(0),
        Ok(Some(node)) if node.failures().is_empty() => Ok(node.functions().len()),
        Ok(Some(node)) => Err(node.failures().iter().map(|f| f.to_string()).collect()),
        Err(e) => Err(vec![format!("functions: {e}")]),
    }
}
