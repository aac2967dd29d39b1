//! The shard pool: pick the shard count, check the locked-memory limit and
//! pinning ([`plan`]), start one pinned glommio executor per shard ([`serve`]), wait until every shard has bound its sockets (or
//! report the first failure and stop the rest), serve until a stop signal,
//! and log the final counters.

use std::os::fd::OwnedFd;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_lite::future;
use glommio::{Latency, LocalExecutorPoolBuilder, PoolPlacement, Shares};

use super::health;
use crate::dns::Transport;

use super::context::ShardCtx;
use super::control::{self, Command, Controller};
use super::services;
use super::state::{ConfigSource, Shared};
use crate::runtime::sockets;

/// glommio refuses to start below this locked-memory limit.
const MIN_MEMLOCK: u64 = 512 * 1024;
/// How often shards publish their counters to the stats board.
const STATS_PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A shard's start-up report to the main thread.
enum Startup {
    Ready { index: usize, cpu: Option<usize> },
    Failed { index: usize, error: String },
}

/// Where the shards run: how many, on which CPUs, with how much io_memory.
pub struct Placement {
    pub shards: usize,
    cpus: glommio::CpuSet,
    io_memory_kib: usize,
    listen: Vec<std::net::SocketAddr>,
}

/// Pick the shard count (`--shards`, else `server.shards`, else one per
/// usable CPU) and check that the shards can start there: the CPUs this
/// process may use, the locked-memory limit, pinning.
pub fn plan(config: &crate::config::Config, shards: Option<usize>) -> anyhow::Result<Placement> {
    // Shards are pinned only to CPUs this process may use (taskset, cgroup
    // cpuset), so `taskset -c 1 shardgate --shards 1` runs on CPU 1.
    let cpus = allowed_cpus()?;
    let usable = cpus.len();
    let n = match shards.or(Some(config.server.shards).filter(|&s| s > 0)) {
        Some(n) => n,
        None => usable,
    };
    if n == 0 || n > usable {
        return Err(anyhow!(
            "cannot run {n} shards on {usable} usable online CPU(s) (online CPUs this process's affinity allows): \
             use --shards (or server.shards) between 1 and {usable}"
        ));
    }
    let io_memory_kib = config.server.io_memory_kib;
    check_memlock(n, io_memory_kib)?;
    // A shard that cannot pin dies inside glommio before it can say why:
    // find out here, with an error that names the cause.
    let mut cpu_list: Vec<usize> = cpus.iter().map(|l| l.cpu).collect();
    cpu_list.sort_unstable();
    sockets::check_pinning(&cpu_list)?;
    let listen = config.dns.listen.clone();
    for addr in listen.iter().filter(|a| a.ip().is_unspecified()) {
        // The UDP loop does not use IP_PKTINFO: a reply leaves from the
        // kernel's preferred source address, not the one the query was sent to.
        tracing::warn!(
            "dns.listen {addr}: UDP replies from a wildcard address leave from the kernel's preferred \
             source address; on a host with several addresses clients may reject them. List each address instead"
        );
    }

    Ok(Placement {
        shards: n,
        cpus,
        io_memory_kib,
        listen,
    })
}

/// Start the shards of `placement` on `shared` (each takes its control
/// channel from `control_fds`), wait until every one has bound its
/// sockets or one failed, report ready (systemd, `/readyz` through
/// `health`), serve until a stop signal and log the final counters.
pub fn serve(
    placement: Placement,
    shared: Arc<Shared>,
    ctl: Arc<Controller>,
    control_fds: Vec<OwnedFd>,
    health: &'static health::Health,
) -> anyhow::Result<()> {
    let Placement {
        shards: n,
        cpus,
        io_memory_kib,
        listen,
    } = placement;
    let source = shared.source.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<Startup>();
    let boot = Boot {
        shared: shared.clone(),
        next_index: Arc::new(AtomicUsize::new(0)),
        control_fds: Arc::new(Mutex::new(control_fds.into_iter().map(Some).collect())),
        ready: ready_tx,
    };
    let started = Instant::now();
    let pool = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(n, Some(cpus)))
        .name("shard")
        .io_memory(io_memory_kib * 1024)
        // Unpinned blocking threads: the default pins every shard's blocking
        // thread to the first CPU.
        .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
        .on_all_shards(move || shard_main(boot))
        .map_err(|e| {
            anyhow!(
                "cannot start {n} shard executors: {e}. {}",
                memlock_hint(io_memory_kib)
            )
        })?;

    // Wait until every shard has bound its sockets, or one failed.
    let mut ready = 0;
    let mut placement: Vec<(usize, Option<usize>)> = Vec::with_capacity(n);
    let mut failure: Option<String> = None;
    while ready < n && failure.is_none() {
        match ready_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Startup::Ready { index, cpu }) => {
                tracing::debug!(shard = index, ?cpu, "shard ready");
                placement.push((index, cpu));
                health.set_shard_serving(index, true);
                ready += 1;
            }
            Ok(Startup::Failed { index, error }) => {
                failure = Some(format!("shard {index}: {error}"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if pool.handles().iter().any(|h| h.is_finished()) {
                    failure = Some(String::new());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failure = Some(String::new());
            }
        }
    }
    if let Some(failure) = failure {
        ctl.broadcast(Command::Terminate);
        // An executor that died before running its shard (glommio could not
        // set it up) reports only through its join handle: that error is
        // the reason start-up failed, so it goes into the final message.
        let errors: Vec<String> = pool
            .join_all()
            .into_iter()
            .filter_map(|r| match r {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(executor_error(&e.to_string(), io_memory_kib)),
            })
            .collect();
        for e in errors.iter().skip(1) {
            tracing::debug!("shard stopped: {e}");
        }
        let reason = match (failure.is_empty(), errors.first()) {
            (false, _) => failure,
            (true, Some(first)) => format!("a shard executor could not start: {first}"),
            (true, None) => "every shard exited during start-up without an error".into(),
        };
        return Err(anyhow!("start-up failed: {reason}"));
    }
    crate::notify::ready();
    crate::notify::status(&control::status_text(&shared));
    if let Some(every) = crate::notify::watchdog_interval() {
        spawn_watchdog(shared.clone(), every)?;
    }
    tracing::info!(
        "shardgate serving DNS on {} with {n} shard(s) ({}; {} KiB io_memory each, {}, config {}, started in {} ms)",
        listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        {
            placement.sort();
            placement
                .iter()
                .map(|(i, cpu)| match cpu {
                    Some(c) => format!("shard {i} on CPU {c}"),
                    None => format!("shard {i} unpinned"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
        io_memory_kib,
        "DNS UDP on worker threads",
        match &source {
            ConfigSource::Embedded => "<embedded default>".to_string(),
            ConfigSource::File(p) => p.display().to_string(),
        },
        started.elapsed().as_millis()
    );

    let mut errors = Vec::new();
    for r in pool.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let t = shared.stats.totals();
    let per_shard: Vec<u64> = shared
        .stats
        .per_shard()
        .iter()
        .map(|s| s.answered_total(Transport::Udp) + s.answered_total(Transport::Tcp))
        .collect();
    tracing::info!(
        ?per_shard,
        udp_answered = t.answered_total(Transport::Udp),
        tcp_answered = t.answered_total(Transport::Tcp),
        dropped = t.dropped_total(),
        tcp_accepted = t.tcp_accepted,
        tcp_refused = t.tcp_refused,
        map_version = t.map_version,
        "stopped"
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("shard(s) failed: {}", errors.join("; ")))
    }
}

/// Feed systemd's watchdog (`WatchdogSec=`) while every shard keeps
/// publishing its counters (each does every [`STATS_PUBLISH_EVERY`]); a shard
/// that stops publishing stops the keep-alives, and systemd restarts the
/// service.
fn spawn_watchdog(shared: Arc<Shared>, every: Duration) -> anyhow::Result<()> {
    let every = every.max(STATS_PUBLISH_EVERY * 2);
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut gate = crate::notify::WatchdogGate::default();
            loop {
                std::thread::sleep(every);
                if crate::notify::is_stopping() {
                    return;
                }
                let stalled = gate.stalled(&shared.stats.publish_counts());
                if stalled.is_empty() {
                    crate::notify::watchdog();
                } else {
                    tracing::error!(
                        "shard(s) {stalled:?} published no counters for {} ms: not feeding the systemd watchdog \
                         (WatchdogSec=); systemd restarts the service if this goes on",
                        every.as_millis()
                    );
                }
            }
        })
        .context("cannot start the watchdog thread")?;
    Ok(())
}

/// What every shard closure captures.
#[derive(Clone)]
struct Boot {
    shared: Arc<Shared>,
    next_index: Arc<AtomicUsize>,
    control_fds: Arc<Mutex<Vec<Option<OwnedFd>>>>,
    ready: mpsc::Sender<Startup>,
}

/// The life of one shard, on its own pinned executor.
async fn shard_main(boot: Boot) -> Result<(), String> {
    let index = boot.next_index.fetch_add(1, Ordering::SeqCst);
    crate::metrics::process::register_shard_thread(index);
    let fail = |error: String| {
        let _ = boot.ready.send(Startup::Failed {
            index,
            error: error.clone(),
        });
        Err(error)
    };
    let Some(fd) = boot
        .control_fds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(index)
        .and_then(Option::take)
    else {
        return fail("no control channel for this shard".into());
    };
    let cpu = sockets::pinned_cpu();
    let background = glommio::executor().create_task_queue(
        Shares::Static(100),
        Latency::NotImportant,
        "background",
    );
    let ctx = Rc::new(ShardCtx::new(index, cpu, boot.shared.clone(), background));
    let control = glommio::spawn_local(control::serve(ctx.clone(), fd));

    let sockets = match services::bind_services(&ctx) {
        Ok(s) => s,
        Err(e) => return fail(format!("{e:#}")),
    };
    let _ = boot.ready.send(Startup::Ready { index, cpu });
    let tasks = services::spawn_services(&ctx, sockets);
    let publisher = glommio::spawn_local_into(publish_stats(ctx.clone()), background).ok();

    ctx.stop.stopped().await;
    // Not ready any more (load balancers stop sending) while draining.
    ctx.metrics.set_up(false);
    if let Some(health) = crate::shard::health::global() {
        health.set_shard_serving(index, false);
    }
    // Listeners and UDP loops return at once on stop; in-flight TCP work
    // (the gate) gets the rest of the grace period, and so does anything slow.
    let drained = future::or(
        async {
            for t in tasks {
                t.await;
            }
            let _ = ctx.gate.close().await;
            true
        },
        async {
            glommio::timer::sleep(ctx.shutdown_grace()).await;
            false
        },
    )
    .await;
    if !drained {
        tracing::warn!(
            shard = index,
            open = ctx.stats.tcp_open(),
            "still busy after server.shutdown_grace_ms (open TCP connections: open); closing everything"
        );
    }
    ctx.publish_stats();
    drop(publisher);
    drop(control);
    Ok(())
}

/// Publish this shard's counters now and then, from the background queue.
async fn publish_stats(ctx: Rc<ShardCtx>) {
    loop {
        ctx.publish_stats();
        let stopped = future::or(
            async {
                glommio::timer::sleep(STATS_PUBLISH_EVERY).await;
                false
            },
            async {
                ctx.stop.stopped().await;
                true
            },
        )
        .await;
        if stopped {
            return;
        }
    }
}

/// The online CPUs the calling thread's affinity mask allows.
fn allowed_cpus() -> anyhow::Result<glommio::CpuSet> {
    let online =
        glommio::CpuSet::online().map_err(|e| anyhow!("cannot read the CPU topology: {e}"))?;
    // SAFETY: sched_getaffinity fills the zeroed, properly sized set.
    let mask = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Ok(online);
        }
        set
    };
    // SAFETY: CPU_ISSET reads the set; cpu indices come from the topology.
    Ok(online
        .filter(|l| l.cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(l.cpu, &mask) }))
}

/// The soft locked-memory limit in bytes (`None` = unlimited).
fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur)
}

/// A glommio executor's start-up error, with the memlock hint when it is
/// about memory.
fn executor_error(e: &str, io_memory_kib: usize) -> String {
    if e.contains("memory") || e.contains("ENOMEM") || e.contains("os error 12") {
        format!("{e}. {}", memlock_hint(io_memory_kib))
    } else {
        e.to_string()
    }
}

fn memlock_hint(io_memory_kib: usize) -> String {
    let limit = match memlock_limit() {
        Some(l) => format!("{} KiB", l / 1024),
        None => "unlimited".into(),
    };
    format!(
        "If this is about memory or memlock: the locked-memory limit (RLIMIT_MEMLOCK) is {limit} and each shard \
         registers server.io_memory_kib = {io_memory_kib} KiB with io_uring; raise the limit (`ulimit -l`, \
         or LimitMEMLOCK= in the systemd unit) or lower server.io_memory_kib"
    )
}

/// Refuse to start below glommio's minimum. Without CAP_IPC_LOCK, io_uring
/// charges registered buffers to RLIMIT_MEMLOCK, and glommio registers each
/// shard's `io_memory` in three rings: measured here (kernel 6.18), 1 MiB per
/// shard needed about 6 MiB of limit per shard (whole folios are charged),
/// and registration then fails with "Cannot allocate memory" warnings.
/// glommio runs on without registered buffers, which only speed up file
/// I/O (shards do socket I/O only), so say so once, up front.
fn check_memlock(shards: usize, io_memory_kib: usize) -> anyhow::Result<()> {
    let Some(limit) = memlock_limit() else {
        return Ok(());
    };
    if limit < MIN_MEMLOCK {
        bail!(
            "the locked-memory limit (RLIMIT_MEMLOCK) is {} KiB; glommio needs at least {} KiB to start. \
             Raise it: `ulimit -l 8192` in the shell, or LimitMEMLOCK=8M in the systemd unit",
            limit / 1024,
            MIN_MEMLOCK / 1024
        );
    }
    let needed_kib = memlock_needed_kib(shards, io_memory_kib);
    if !has_cap_ipc_lock()
        && io_memory_kib > REGISTERS_RELIABLY_KIB
        && limit / 1024 < needed_kib as u64
    {
        // glommio's own report of this (one multi-line error dump per ring
        // and shard) is filtered out by the default log filter (see
        // main.rs); this line replaces it.
        tracing::warn!(
            "locked-memory limit {} KiB is below the ~{needed_kib} KiB that registering server.io_memory_kib = \
             {io_memory_kib} KiB with io_uring on {shards} shard(s) needs: buffer registration is skipped \
             (harmless: registered buffers only speed up file I/O). To silence this, raise LimitMEMLOCK= / \
             `ulimit -l` to {needed_kib} KiB or set server.io_memory_kib = {REGISTERS_RELIABLY_KIB}",
            limit / 1024
        );
    }
    Ok(())
}

/// The locked memory (KiB) registering `io_memory_kib` on `shards` shards
/// takes without CAP_IPC_LOCK: three rings per shard, charged by whole
/// folios; measured about six times io_memory per shard (kernel 6.18).
fn memlock_needed_kib(shards: usize, io_memory_kib: usize) -> usize {
    shards * io_memory_kib * 6
}

/// io_memory that registered under every limit >= 512 KiB we tried without
/// CAP_IPC_LOCK.
const REGISTERS_RELIABLY_KIB: usize = 64;

/// Whether this process may lock memory without limit (CAP_IPC_LOCK, bit 14
/// of the effective capability set).
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}
