//! Control of running shards from outside them: one socketpair per shard
//! carrying one-byte commands (reload, terminate, publish stats), and the
//! signal thread (signal-hook) that turns SIGHUP into a reload and
//! SIGTERM/SIGINT into a graceful stop.
//!
//! The main side writes with plain blocking `std` calls; each shard reads its
//! end with glommio, so a shard wakes for a command without polling.

use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncReadExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::context::ShardCtx;
use super::state::{ConfigSource, ReloadOutcome, Shared};

/// A command for every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// A new map generation was published: pick it up now (idle shards
    /// would otherwise keep the old one until their next query).
    Refresh = b'R',
    /// Stop accepting, finish in-flight work, exit.
    Terminate = b'T',
    /// Publish counters to the stats board now.
    PublishStats = b'P',
}

/// The main-side ends of the shards' control channels.
#[derive(Debug)]
pub struct Controller {
    shards: Vec<StdUnixStream>,
}

impl Controller {
    /// Create `n` channels: the controller and, per shard, the fd that shard
    /// turns into its glommio end with [`serve`].
    pub fn new(n: usize) -> std::io::Result<(Controller, Vec<OwnedFd>)> {
        let mut mains = Vec::with_capacity(n);
        let mut shard_ends = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = StdUnixStream::pair()?;
            b.set_nonblocking(true)?;
            mains.push(a);
            shard_ends.push(OwnedFd::from(b));
        }
        Ok((Controller { shards: mains }, shard_ends))
    }

    /// Send `cmd` to every shard. A shard that has already exited is skipped.
    pub fn broadcast(&self, cmd: Command) {
        for (i, s) in self.shards.iter().enumerate() {
            if let Err(e) = (&*s).write_all(&[cmd as u8]) {
                tracing::debug!(shard = i, "control channel closed: {e}");
            }
        }
    }
}

/// A shard's control task: obey commands until told to terminate (or until
/// the main side disappears, which also means terminate).
pub async fn serve(ctx: Rc<ShardCtx>, fd: OwnedFd) {
    // SAFETY: `fd` is an owned, connected unix stream socket handed to this
    // shard alone; glommio takes ownership and closes it on drop.
    let mut stream = unsafe { glommio::net::UnixStream::from_raw_fd(fd.into_raw_fd()) };
    let mut buf = [0u8; 64];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                ctx.stop.stop();
                return;
            }
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            match b {
                b'R' => ctx.refresh(),
                b'P' => ctx.publish_stats(),
                b'T' => {
                    ctx.stop.stop();
                    return;
                }
                other => tracing::debug!(shard = ctx.index, "unknown control byte {other}"),
            }
        }
    }
}

/// Handle SIGHUP (reload) and SIGTERM/SIGINT (graceful stop) on a dedicated
/// thread. A second SIGTERM/SIGINT exits at once with status 1 (one within
/// a second of the first is taken as the same request delivered twice, e.g.
/// to the process and to its process group).
pub fn spawn_signal_thread(shared: Arc<Shared>, ctl: Arc<Controller>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping: Option<std::time::Instant> = None;
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        reload(&shared, &ctl, "sighup");
                    }
                    _ if stopping.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) => {
                        tracing::debug!("repeated stop signal within 1 s: already stopping");
                    }
                    _ if stopping.is_some() => {
                        tracing::error!("second stop signal: exiting immediately");
                        std::process::exit(1);
                    }
                    _ => {
                        stopping = Some(std::time::Instant::now());
                        let grace = Duration::from_millis(shared.startup.server.shutdown_grace_ms);
                        tracing::info!(
                            "{}: stopping; in-flight TCP queries get up to {} ms",
                            if sig == SIGINT { "SIGINT" } else { "SIGTERM" },
                            grace.as_millis()
                        );
                        crate::notify::stopping();
                        ctl.broadcast(Command::Terminate);
                        // Backstop: shards bound their own wait by the grace
                        // period; if the process is still here well after it,
                        // something is stuck.
                        let _ = std::thread::Builder::new()
                            .name("stop-watchdog".into())
                            .spawn(move || {
                                std::thread::sleep(grace + Duration::from_secs(2));
                                tracing::error!(
                            "shards did not stop within server.shutdown_grace_ms + 2 s; exiting"
                        );
                                std::process::exit(1);
                            });
                    }
                }
            }
        })?;
    Ok(())
}

/// Reload (SIGHUP, or `POST /v1/reload` with `trigger` "api"): re-read,
/// validate and build off the shards; swap or keep. Logs and counts the
/// outcome and returns it.
pub fn reload(shared: &Shared, ctl: &Controller, trigger: &'static str) -> ReloadOutcome {
    let path = match &shared.source {
        ConfigSource::Embedded => {
            tracing::info!(
                "{trigger} reload: running on the embedded default configuration; nothing to reload (start with --config FILE to reload a file)"
            );
            return ReloadOutcome::NothingToReload;
        }
        ConfigSource::File(p) => p.display().to_string(),
    };
    crate::notify::reloading();
    let started = std::time::Instant::now();
    let outcome = shared.reload();
    match &outcome {
        ReloadOutcome::Swapped { version } => {
            ctl.broadcast(Command::Refresh);
            crate::metrics::record_reload(trigger, true);
            crate::metrics::set_map_version(*version);
            tracing::info!(
                "reloaded {path}: serving address map version {version} (built in {} ms)",
                started.elapsed().as_millis()
            );
        }
        ReloadOutcome::Rejected(problems) => {
            crate::metrics::record_reload(trigger, false);
            for p in problems {
                tracing::error!("{}", super::format_problem(&path, p));
            }
            tracing::error!(
                "reload of {path} rejected ({} problem(s)); still serving address map version {}",
                problems.len(),
                shared.version()
            );
        }
        ReloadOutcome::NothingToReload => {}
    }
    crate::notify::ready();
    crate::notify::status(&status_text(shared));
    outcome
}

/// The `STATUS=` line for systemd: what is served, by how many shards, at
/// which config (address map) generation.
pub fn status_text(shared: &Shared) -> String {
    let listen: Vec<String> = shared
        .startup
        .dns
        .listen
        .iter()
        .map(|a| a.to_string())
        .collect();
    format!(
        "serving DNS on {}; {} shard(s); config generation {}",
        listen.join(", "),
        shared.stats.publish_counts().len(),
        shared.version()
    )
}
