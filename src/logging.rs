//! Log output: a tracing subscriber on stderr set up from `[log]` (level
//! filter, `text` or `json` lines), with `RUST_LOG` overriding the level.
//!
//! Under systemd (`JOURNAL_STREAM` names our stderr) every line starts with
//! its syslog priority in sd-daemon(3) form (`<3>` error, `<4>` warning,
//! `<6>` info, `<7>` debug and trace) and carries no timestamp, so journald
//! files it at the right priority (`journalctl -p warning` works) and adds
//! its own time. Elsewhere lines are as a terminal expects: timestamp, level,
//! target, message.
//!
//! glommio reports a failed io_uring buffer registration (a locked-memory
//! limit below what `server.io_memory_kib` needs) as one multi-line debug
//! dump per ring and shard; its target is filtered out by default because
//! shardgate says the same in one warning line (`shard::pool`).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Directives added to every filter built from `[log] level`.
const QUIET_TARGETS: &str = "glommio::sys::uring=error";

/// The sd-daemon(3) priority prefix of a level.
pub fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Whether stderr is the journal stream systemd describes in
/// `JOURNAL_STREAM` ("DEVICE:INODE" of the stream socket).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed stat is a valid value; fstat fills it for stderr.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(std::io::stderr().as_raw_fd(), &mut st) != 0 {
            return false;
        }
        st
    };
    st.st_dev == dev && st.st_ino == ino
}

/// The filter: `RUST_LOG` when set and valid, else `[log] level` plus the
/// quiet targets.
pub fn filter(config: &LogConfig) -> EnvFilter {
    if let Ok(f) = EnvFilter::try_from_default_env() {
        return f;
    }
    EnvFilter::try_new(format!("{},{QUIET_TARGETS}", config.level))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_TARGETS}")))
}

/// Prefixes each event with its syslog priority.
struct WithPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Install the global subscriber (once, at start-up).
pub fn init(config: &LogConfig) {
    let journal = stderr_is_journal();
    let ansi = !journal && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(config))
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match (config.format, journal) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder
            .event_format(WithPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false),
            ))
            .try_init(),
        (LogFormat::Json, false) => builder.json().try_init(),
        (LogFormat::Json, true) => builder
            .event_format(WithPriority(tracing_subscriber::fmt::format().json()))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("shardgate: cannot set up logging: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), "<3>");
        assert_eq!(priority(&Level::WARN), "<4>");
        assert_eq!(priority(&Level::INFO), "<6>");
        assert_eq!(priority(&Level::DEBUG), "<7>");
        assert_eq!(priority(&Level::TRACE), "<7>");
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        // Only this test touches JOURNAL_STREAM in the unit-test binary.
        std::env::set_var("JOURNAL_STREAM", "1:2");
        assert!(!stderr_is_journal());
        std::env::set_var("JOURNAL_STREAM", "garbage");
        assert!(!stderr_is_journal());
        use std::os::fd::AsRawFd;
        // SAFETY: a zeroed stat is a valid value; fstat fills it for stderr.
        let st = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(std::io::stderr().as_raw_fd(), &mut st), 0);
            st
        };
        std::env::set_var("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino));
        assert!(stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
