//! One harness for every process a test starts (shardgate, its tools):
//! spawn with the log captured line by line, wait for a log line or for the
//! exit, signal, stop; killed on drop (and with the test process: the child
//! gets `PR_SET_PDEATHSIG`).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

/// Lines a process logged (shared with its reader thread; a harness that
/// restarts a server may hand the same log to every run).
pub type Log = Arc<Mutex<Vec<String>>>;

/// A child process whose stderr (where shardgate logs) is kept.
pub struct Process {
    child: Child,
    /// Set once the exit was seen (the child is reaped then).
    status: Option<ExitStatus>,
    log: Log,
    /// Copies stderr into `log`; joined once the exit is seen, so the log
    /// is complete when a caller learns of the exit.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    /// `shardgate ARGS` with `RUST_LOG=info` and no inherited
    /// `STATE_DIRECTORY`.
    pub fn shardgate<I, S>(args: I) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("STATE_DIRECTORY");
        Process::spawn(cmd, None)
    }

    /// `shardgate run --config CONFIG EXTRA...`.
    pub fn run(config: &Path, extra: &[&str]) -> Process {
        let mut args: Vec<&OsStr> = vec!["run".as_ref(), "--config".as_ref(), config.as_os_str()];
        args.extend(extra.iter().map(|a| OsStr::new(*a)));
        Process::shardgate(args)
    }

    /// Start `cmd` (stdin and stdout closed, stderr captured). With
    /// `log_file`, every captured line is also appended there (a log that
    /// outlives restarts).
    pub fn spawn(cmd: Command, log_file: Option<PathBuf>) -> Process {
        Process::spawn_into(cmd, Log::default(), log_file)
    }

    /// Like [`spawn`](Self::spawn), appending to `log` (e.g. the history
    /// of a server's earlier runs).
    pub fn spawn_into(mut cmd: Command, log: Log, log_file: Option<PathBuf>) -> Process {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only, between fork and exec: the child dies with the
        // test thread that started it, even if the test process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut file = log_file.map(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("open the test log file")
            });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = &mut file {
                    let _ = writeln!(f, "{line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        Process {
            child,
            status: None,
            log,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log this process appends to.
    pub fn log(&self) -> Log {
        self.log.clone()
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Lines logged so far that contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Wait until a log line contains `needle`; panics with the log on
    /// timeout or if the process exits first.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        self.wait_log_times(needle, 1, timeout);
    }

    /// Wait until `needle` has been logged `times` times in all.
    pub fn wait_log_times(&mut self, needle: &str, times: usize, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if self.count_log(needle) >= times {
                return;
            }
            if let Some(status) = self.try_exit() {
                if self.count_log(needle) >= times {
                    return;
                }
                panic!(
                    "the process exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > end {
                panic!(
                    "timed out waiting for {needle:?} in the log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
            self.join_reader();
        }
        self.status
    }

    fn join_reader(&mut self) {
        if self.status.is_some() {
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }

    /// Exit status if the process exits within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Send `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
            self.join_reader();
        }
    }

    /// SIGTERM and wait up to `grace` for the exit (then SIGKILL).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            self.signal(libc::SIGTERM);
        }
        let status = self.wait_exit(grace);
        if status.is_none() {
            self.kill();
        }
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
