//! `shardgate-load` command line: parse and check the arguments, start one
//! load thread per `--threads`, print a progress line once a second on a
//! terminal, merge the threads' results and write the outputs (summary
//! table, percentile distribution, JSON result, PNG plot). `plot` overlays
//! result files; `plot-xy` draws (x, y) series described in JSON.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::args::{check_target, parse_duration_ns, parse_sources, resolve_target};
use super::codec::UdpCodec;
use super::dnsmsg::{DnsCodec, DnsOptions};
use super::fncodec::FnUdpCodec;
use super::httploop::{self, HttpPlan};
use super::plot::{self, Labels};
use super::queryfile;
use super::schedule::{auto_tick_ns, split_count, split_rate, AUTO_TICK_BATCH};
use super::stats::{RunInfo, RunResult, Stats};
use super::sys::{self, Clock, Progress};
use super::udp::{self, Load, UdpPlan};
use super::xyplot::{self, XyPlot};

/// Load generator for shardgate: DNS queries, function datagrams and HTTP
/// invocations, closed or open loop, with honest latency percentiles.
#[derive(Parser, Debug)]
#[command(name = "shardgate-load", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// DNS queries over UDP from a query file in dnsperf's format.
    Dns(DnsArgs),
    /// Function invocation datagrams (shardgate's UDP frame).
    FnUdp(FnArgs),
    /// Function invocations over keep-alive HTTP/1.1: POST /fn/<name>.
    FnHttp(FnHttpArgs),
    /// Overlay the latency percentiles of result files in one PNG.
    Plot(PlotArgs),
    /// Draw (x, y) series described in a JSON file as lines in one PNG
    /// (the DNS bench's latency against rate). The file: {"title", "x_label",
    /// "y_label", "log_x": bool, "series": [{"label", "points": [[x, y], ...],
    /// "colour": index, "dashed": bool}]}; only "series" (with "label" and
    /// "points") is required.
    PlotXy(PlotXyArgs),
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Measured time (after the warm-up): 10s, 500ms, 2m.
    #[arg(long, short = 'd', default_value = "10s")]
    duration: String,
    /// Time sent but not counted, before the measured window.
    #[arg(long, default_value = "1s")]
    warmup: String,
    /// Open loop: requests per second in total (latency from the intended
    /// send time). Without it the load is closed loop.
    #[arg(long, short = 'r', conflicts_with = "outstanding")]
    rate: Option<f64>,
    /// Closed loop: requests kept outstanding in total (default 100; fn-http:
    /// one per connection).
    #[arg(long, short = 'n')]
    outstanding: Option<usize>,
    /// Load threads (each with its own sockets).
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    /// Source addresses to spread requests over (one socket each per
    /// thread): 127.0.0.2,127.0.0.3 or 127.0.0.2-127.0.0.20. Repeatable.
    #[arg(long, short = 's')]
    source: Vec<String>,
    /// A request without a reply after this long is lost.
    #[arg(long, default_value = "1s")]
    timeout: String,
    /// Open loop: at most one wake-up per tick; each sends the requests
    /// intended up to one tick ahead in one batch (a request sent late is
    /// measured from its intended time, one sent early from when it left).
    /// Shorter: smoother load, more client CPU; 0: one wake-up per request.
    /// `auto`: about --batch requests per wake-up, between 100us and 1ms.
    #[arg(long, default_value = "auto")]
    tick: String,
    /// Open loop with `--tick auto`: requests per wake-up to aim for. More:
    /// less client CPU, burstier load.
    #[arg(long, default_value_t = AUTO_TICK_BATCH, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the latency-percentile plot (PNG) to this file.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Name of this run in the result and plot legend.
    #[arg(long)]
    label: Option<String>,
    /// Allow a target outside loopback.
    #[arg(long)]
    allow_remote: bool,
    /// No progress line even on a terminal.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Leave out the full percentile distribution.
    #[arg(long)]
    brief: bool,
    /// dns, fn-udp: one datagram per send call instead of UDP GSO runs.
    #[arg(long)]
    no_gso: bool,
}

#[derive(Args, Debug)]
struct DnsArgs {
    /// DNS server ADDRESS:PORT.
    #[arg(long, default_value = "127.0.0.1:8053")]
    target: String,
    /// Query file: `name TYPE` per line (dnsperf's format).
    #[arg(long, short = 'f', value_name = "FILE")]
    queries: PathBuf,
    /// Add EDNS(0) with this UDP payload size (dnsperf -e uses 4096).
    #[arg(long, value_name = "BYTES")]
    edns: Option<u16>,
    /// Set the DO bit (implies --edns 4096 when --edns is not given).
    #[arg(long)]
    dnssec_ok: bool,
    /// Clear the RD bit.
    #[arg(long)]
    no_rd: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct FnArgs {
    /// Function service ADDRESS:PORT.
    #[arg(long, default_value = "127.0.0.1:8054")]
    target: String,
    /// Function to invoke.
    #[arg(long, short = 'F')]
    function: String,
    /// Input of every invocation.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Input of every invocation, from a file.
    #[arg(long, value_name = "FILE")]
    data_file: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct FnHttpArgs {
    #[command(flatten)]
    f: FnArgs,
    /// Keep-alive connections in total (closed loop: --outstanding requests
    /// are spread over them, pipelined when more than the connections).
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// Result files written with --json.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Output PNG.
    #[arg(long, short = 'o', default_value = "latency.png")]
    out: PathBuf,
    #[arg(long, default_value = "latency by percentile")]
    title: String,
}

#[derive(Args, Debug)]
struct PlotXyArgs {
    /// The plot's description (JSON).
    description: PathBuf,
    /// Output PNG.
    #[arg(long, short = 'o', default_value = "plot.png")]
    out: PathBuf,
}

/// Run the command line; the binary's `main` is just this.
pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`| head`) like other command-line tools.
    // SAFETY: restoring the default disposition of SIGPIPE at startup.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dns(a) => run_dns(a),
        Command::FnUdp(a) => run_fn_udp(a),
        Command::FnHttp(a) => run_fn_http(a),
        Command::Plot(a) => run_plot(a),
        Command::PlotXy(a) => run_plot_xy(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// Checked common settings.
struct Common {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    threads: usize,
    rate: Option<f64>,
    outstanding: usize,
    warmup_ns: u64,
    duration_ns: u64,
    timeout_ns: u64,
    /// `None`: automatic, from each thread's rate and `batch`.
    tick_ns: Option<u64>,
    batch: u32,
}

const MAX_THREADS: usize = 256;

fn common(target: &str, a: &LoadArgs, default_outstanding: usize) -> Result<Common, String> {
    let target = resolve_target(target)?;
    let sources = parse_sources(&a.source)?;
    check_target(target, &sources, a.allow_remote)?;
    if a.threads == 0 || a.threads > MAX_THREADS {
        return Err(format!("--threads must be 1..={MAX_THREADS}"));
    }
    if let Some(r) = a.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err("--rate must be a positive number of requests per second".into());
        }
    }
    let outstanding = a.outstanding.unwrap_or(default_outstanding);
    if a.rate.is_none() && outstanding < a.threads {
        return Err(format!(
            "--outstanding {outstanding} is less than --threads {}: every thread needs at least one",
            a.threads
        ));
    }
    let duration_ns = parse_duration_ns(&a.duration)?;
    if duration_ns == 0 {
        return Err("--duration must be more than zero".into());
    }
    let timeout_ns = parse_duration_ns(&a.timeout)?;
    if timeout_ns == 0 {
        return Err("--timeout must be more than zero".into());
    }
    Ok(Common {
        target,
        sources,
        threads: a.threads,
        rate: a.rate,
        outstanding,
        warmup_ns: parse_duration_ns(&a.warmup)?,
        duration_ns,
        timeout_ns,
        batch: a.batch,
        tick_ns: match a.tick.as_str() {
            "auto" => None,
            t => Some(parse_duration_ns(t)?),
        },
    })
}

impl Common {
    fn load_of(&self, i: usize) -> Load {
        match self.rate {
            Some(r) => {
                let (rate, offset_ns) = split_rate(r, self.threads, i);
                Load::Open { rate, offset_ns }
            }
            None => Load::Closed {
                outstanding: split_count(self.outstanding, self.threads, i),
            },
        }
    }

    /// The open-loop tick of thread `i`.
    fn tick_of(&self, i: usize) -> u64 {
        self.tick_ns.unwrap_or_else(|| match self.load_of(i) {
            Load::Open { rate, .. } => auto_tick_ns(rate, self.batch),
            Load::Closed { .. } => 0,
        })
    }

    fn info(&self, mode: &str, a: &LoadArgs) -> RunInfo {
        RunInfo {
            label: a.label.clone().unwrap_or_else(|| mode.to_string()),
            mode: mode.to_string(),
            target: self.target.to_string(),
            load: if self.rate.is_some() {
                "open"
            } else {
                "closed"
            }
            .to_string(),
            rate_per_s: self.rate,
            outstanding: self.rate.is_none().then_some(self.outstanding),
            threads: self.threads,
            sources: self.sources.iter().map(|s| s.to_string()).collect(),
            duration_s: self.duration_ns as f64 / 1e9,
            warmup_s: self.warmup_ns as f64 / 1e9,
            timeout_ms: self.timeout_ns / 1_000_000,
        }
    }
}

/// Start one thread per `threads`, show progress, and merge the results.
/// Returns the merged stats and the measured time covered, seconds.
fn run_threads<F>(c: &Common, show_progress: bool, body: F) -> Result<(Stats, f64), String>
where
    F: Fn(usize, Clock, &Progress, &AtomicBool) -> Result<Stats, String> + Sync,
{
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C: stop sending, wait for replies, report what was measured.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop));
    let progress: Vec<Progress> = (0..c.threads).map(|_| Progress::default()).collect();
    let clock = Clock::starting_in(100_000_000);
    let send_end = c.warmup_ns + c.duration_ns;
    let mut stopped_at = None;
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..c.threads)
            .map(|i| {
                let (body, p, stop) = (&body, &progress[i], &*stop);
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn_scoped(scope, move || body(i, clock, p, stop))
                    .expect("cannot start a load thread")
            })
            .collect();
        let mut last = sys::total(&progress);
        let mut next_line = 1_000_000_000u64;
        // Bounded by the threads, which end by send_end + timeout.
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            let now = clock.now();
            if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
                stopped_at = Some(now);
            }
            if show_progress && now >= next_line {
                let t = sys::total(&progress);
                // The phase of the second the numbers cover.
                let mid = now.saturating_sub(500_000_000);
                let phase = if mid < c.warmup_ns {
                    "warm-up"
                } else if mid < send_end {
                    "measuring"
                } else {
                    "draining"
                };
                eprint!(
                    "\r[{:>4}s {phase:>9}] {:>9}/s sent {:>9}/s ok  errors {:>8}  lost {:>8}   ",
                    now / 1_000_000_000,
                    t.sent - last.sent,
                    t.ok - last.ok,
                    t.errors,
                    t.lost
                );
                let _ = std::io::stderr().flush();
                last = t;
                next_line += 1_000_000_000;
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a load thread panicked".into()))
            })
            .collect::<Vec<_>>()
    });
    if show_progress {
        eprintln!();
    }
    let mut total = Stats::default();
    for r in results {
        total.merge(&r?);
    }
    let measured_end = stopped_at.unwrap_or(send_end).min(send_end);
    let elapsed = measured_end.saturating_sub(c.warmup_ns) as f64 / 1e9;
    Ok((total, elapsed))
}

fn show_progress(a: &LoadArgs) -> bool {
    !a.quiet && std::io::stderr().is_terminal()
}

fn run_udp<C: UdpCodec>(codec: &C, c: &Common, mode: &str, a: &LoadArgs) -> Result<(), String> {
    let max_outstanding = (c.sources.len().max(1) * codec.id_space() as usize).min(1 << 20);
    if c.rate.is_none() && c.outstanding > max_outstanding * c.threads {
        return Err(format!(
            "--outstanding {} exceeds the request ids available ({} per thread); add --source \
             addresses or threads",
            c.outstanding, max_outstanding
        ));
    }
    let items = codec.items();
    let (stats, elapsed) = run_threads(c, show_progress(a), |i, clock, p, stop| {
        let plan = UdpPlan {
            target: c.target,
            sources: c.sources.clone(),
            load: c.load_of(i),
            first_item: i * items / c.threads,
            warmup_ns: c.warmup_ns,
            duration_ns: c.duration_ns,
            timeout_ns: c.timeout_ns,
            tick_ns: c.tick_of(i),
            clock,
            recv_buffer: 8 << 20,
            gso: !a.no_gso,
        };
        udp::run_thread(codec, &plan, p, stop)
    })?;
    finish(RunResult::build(c.info(mode, a), &stats, elapsed), a)
}

fn run_dns(a: DnsArgs) -> Result<(), String> {
    let c = common(&a.target, &a.load, 100)?;
    let text = std::fs::read_to_string(&a.queries)
        .map_err(|e| format!("cannot read query file {}: {e}", a.queries.display()))?;
    let specs = queryfile::parse(&text).map_err(|errs| {
        let lines: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {e}", a.queries.display()))
            .collect();
        lines.join("\n")
    })?;
    let opts = DnsOptions {
        recursion_desired: !a.no_rd,
        edns_payload: a.edns.or(a.dnssec_ok.then_some(4096)),
        dnssec_ok: a.dnssec_ok,
    };
    run_udp(&DnsCodec::new(&specs, &opts), &c, "dns", &a.load)
}

fn payload(a: &FnArgs) -> Result<Vec<u8>, String> {
    match (&a.data, &a.data_file) {
        (Some(d), _) => Ok(d.clone().into_bytes()),
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| format!("cannot read --data-file {}: {e}", f.display()))
        }
        (None, None) => Ok(Vec::new()),
    }
}

fn run_fn_udp(a: FnArgs) -> Result<(), String> {
    let c = common(&a.target, &a.load, 100)?;
    let codec = FnUdpCodec::new(&a.function, &[payload(&a)?])?;
    run_udp(&codec, &c, "fn-udp", &a.load)
}

fn run_fn_http(a: FnHttpArgs) -> Result<(), String> {
    let f = &a.f;
    if a.connections == 0 || a.connections > 100_000 {
        return Err("--connections must be 1..=100000".into());
    }
    let c = common(&f.target, &f.load, a.connections)?;
    if a.connections < c.threads {
        return Err(format!(
            "--connections {} is less than --threads {}",
            a.connections, c.threads
        ));
    }
    if !shardgate::config::functions::valid_name(&f.function) {
        return Err(format!(
            "{:?} is not a valid function name: use 1-64 characters of A-Z a-z 0-9 _ - .",
            f.function
        ));
    }
    let request = super::http::build_request(&c.target.to_string(), &f.function, &payload(f)?);
    let (stats, elapsed) = run_threads(&c, show_progress(&f.load), |i, clock, p, stop| {
        let plan = HttpPlan {
            target: c.target,
            sources: c.sources.clone(),
            connections: split_count(a.connections, c.threads, i),
            load: c.load_of(i),
            request: request.clone(),
            warmup_ns: c.warmup_ns,
            duration_ns: c.duration_ns,
            timeout_ns: c.timeout_ns,
            tick_ns: c.tick_of(i),
            clock,
        };
        httploop::run_thread(&plan, p, stop)
    })?;
    finish(
        RunResult::build(c.info("fn-http", &f.load), &stats, elapsed),
        &f.load,
    )
}

/// Print the summary and distribution; write the JSON and the plot
/// (files first, so a closed stdout loses nothing).
fn finish(r: RunResult, a: &LoadArgs) -> Result<(), String> {
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let plotted = match &a.plot {
        Some(path) => Some(write_plot(
            &[(r.info.label.clone(), r.clone())],
            path,
            &r.info.label,
        )?),
        None => None,
    };
    if !a.brief {
        print!("{}", r.distribution_table());
        println!();
    }
    print!("{}", r.summary_table());
    if let Some(path) = &a.json {
        println!("result: {}", path.display());
    }
    if let Some(note) = plotted {
        print!("{note}");
    }
    Ok(())
}

fn run_plot_xy(a: PlotXyArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&a.description)
        .map_err(|e| format!("cannot read {}: {e}", a.description.display()))?;
    let plot = XyPlot::from_json(&text).map_err(|e| format!("{}: {e}", a.description.display()))?;
    let labels = xyplot::plot_png(&plot, &a.out, (1000, 600))?;
    println!("{}", labels.note(&a.out));
    Ok(())
}

/// Write the plot; returns the lines to tell the user about it.
fn write_plot(results: &[(String, RunResult)], out: &Path, title: &str) -> Result<String, String> {
    use std::fmt::Write as _;
    let labels = plot::plot_png(results, out, title, (1000, 600))?;
    let mut note = format!("{}\n", labels.note(out));
    if labels == Labels::None {
        // Without a legend, say which colour is which run.
        for (i, (label, _)) in results.iter().enumerate() {
            let _ = writeln!(
                note,
                "  {}: {label}",
                plot::COLOURS[i % plot::COLOURS.len()].0
            );
        }
    }
    Ok(note)
}

fn run_plot(a: PlotArgs) -> Result<(), String> {
    let mut results = Vec::with_capacity(a.results.len());
    for path in &a.results {
        let r = plot::read_result(path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = if r.info.label.is_empty() || results.iter().any(|(l, _)| *l == r.info.label) {
            stem
        } else {
            r.info.label.clone()
        };
        results.push((label, r));
    }
    print!("{}", write_plot(&results, &a.out, &a.title)?);
    Ok(())
}
