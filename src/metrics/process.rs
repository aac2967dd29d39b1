//! Process-wide figures read from `/proc/self`: resident memory, open file
//! descriptors and their limit, start time. Read by the admin thread when it
//! renders `/metrics`, never by the shards.

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

#[cfg(test)]
mod tests {
    use super::*;

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
