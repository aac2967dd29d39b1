//! Process-wide figures read from `/proc/self`: resident memory, open file
//! descriptors and their limit, start time, CPU time (the process's and
//! each shard's threads'). Read by the admin thread when it renders
//! `/metrics`, never by the shards; shards only register their thread ids
//! once ([`register_shard_thread`]).

use std::fs;

/// A snapshot of the process figures; `None` where `/proc` could not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
}

/// Read the current figures from `/proc/self`.
pub fn read() -> ProcessStats {
    let page = page_size();
    let (virtual_bytes, resident_bytes) = match fs::read_to_string("/proc/self/statm") {
        Ok(text) => parse_statm(&text, page),
        Err(_) => (None, None),
    };
    let open_fds = fs::read_dir("/proc/self/fd")
        .ok()
        // The directory handle itself is one of the entries: leave it out.
        .map(|dir| (dir.count() as u64).saturating_sub(1));
    let limits = fs::read_to_string("/proc/self/limits").ok();
    let status = fs::read_to_string("/proc/self/status").ok();
    ProcessStats {
        resident_bytes,
        virtual_bytes,
        open_fds,
        max_fds: limits.as_deref().and_then(parse_max_open_files),
        threads: status.as_deref().and_then(parse_threads),
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// `/proc/self/statm`: "size resident shared text lib data dt" in pages.
fn parse_statm(text: &str, page: u64) -> (Option<u64>, Option<u64>) {
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let size = fields.next().flatten().map(|p| p * page);
    let resident = fields.next().flatten().map(|p| p * page);
    (size, resident)
}

/// The soft limit from the `Max open files` line of `/proc/self/limits`.
fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The `Threads:` line of `/proc/self/status`.
fn parse_threads(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// Threads doing a shard's work (its executor and its DNS workers), by
/// shard index, as kernel thread ids.
static SHARD_THREADS: std::sync::Mutex<Vec<(usize, i32)>> = std::sync::Mutex::new(Vec::new());

/// Count the calling thread's CPU time as shard `shard`'s (call once, from
/// the thread, when it starts).
pub fn register_shard_thread(shard: usize) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    SHARD_THREADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((shard, tid));
}

/// CPU seconds (user + system) of the whole process.
pub fn process_cpu_seconds() -> Option<f64> {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat_cpu_ticks(&t))
        .map(|ticks| ticks as f64 / clock_ticks())
}

/// CPU seconds of every shard's registered threads, by shard index
/// (threads that have exited no longer count).
pub fn shard_cpu_seconds() -> Vec<(usize, f64)> {
    let threads = SHARD_THREADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut per_shard: Vec<(usize, f64)> = Vec::new();
    for (shard, tid) in threads {
        let ticks = fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .ok()
            .and_then(|t| parse_stat_cpu_ticks(&t))
            .unwrap_or(0);
        let secs = ticks as f64 / clock_ticks();
        match per_shard.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, total)) => *total += secs,
            None => per_shard.push((shard, secs)),
        }
    }
    per_shard.sort_by_key(|(s, _)| *s);
    per_shard
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/.../stat` line, in clock
/// ticks. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_after_the_command_name() {
        let stat =
            "42 (shard-0 (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(281));
        assert_eq!(parse_stat_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn counts_cpu_of_the_process_and_of_registered_threads() {
        // Burn a little CPU on a registered thread.
        std::thread::spawn(|| {
            register_shard_thread(7);
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed() < std::time::Duration::from_millis(60) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
            let shard7 = shard_cpu_seconds()
                .into_iter()
                .find(|(s, _)| *s == 7)
                .map(|(_, secs)| secs);
            assert!(shard7.unwrap() > 0.0, "{shard7:?}");
        })
        .join()
        .unwrap();
        assert!(process_cpu_seconds().unwrap() > 0.0);
    }

    #[test]
    fn parses_proc_formats() {
        assert_eq!(
            parse_statm("2048 300 100 10 0 500 0\n", 4096),
            (Some(2048 * 4096), Some(300 * 4096))
        );
        assert_eq!(parse_statm("", 4096), (None, None));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(parse_threads("Name:\tx\nThreads:\t7\n"), Some(7));
    }

    #[test]
    fn reads_this_process() {
        let before = read();
        let file = std::fs::File::open("/proc/self/statm").unwrap();
        let with_one_more = read();
        drop(file);
        assert!(before.resident_bytes.unwrap() > 0);
        // Other test threads may open files too, so only check the direction.
        assert!(with_one_more.open_fds.unwrap() >= 1);
        assert!(before.max_fds.unwrap() > 0);
        assert!(before.threads.unwrap() >= 1);
    }
}
