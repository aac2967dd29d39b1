//! `shardgate ctl`: a control client for a running shardgate (like `knotc`
//! or `rndc`). It reads the admin address and token from the configuration
//! file and talks to the admin HTTP API (`src/admin/api.rs`) with one
//! blocking request per command.
//!
//! Exit codes, for scripts and for the unit's `ExecReload=`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (for `status`: every shard serves) |
//! | 1 | the server refused or failed (a rejected reload, a refused change, not ready) |
//! | 2 | usage or configuration error (bad arguments, unreadable config, bad token file) |
//! | 3 | the server is unreachable (nothing listens on the admin address, or it timed out) |
//!
//! The request/response handling ([`build_request`], [`parse_response`],
//! [`admin_from_toml`]) is pure; only [`exchange`] touches a socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

/// Exit status: done.
pub const EXIT_OK: u8 = 0;
/// Exit status: the server refused or failed.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the server is unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// The default configuration file of a packaged installation.
pub const DEFAULT_CONFIG: &str = "/etc/shardgate/shardgate.toml";

/// Default admin address (`server.admin_listen`'s default).
const DEFAULT_ADMIN: &str = "127.0.0.1:9353";

/// How long one request may take (a reload builds the whole map).
const TIMEOUT: Duration = Duration::from_secs(30);

/// `shardgate ctl` arguments.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Configuration file of the running server: its server.admin_listen
    /// and admin token are used.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Admin address to use instead of the config's server.admin_listen.
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What to ask the running server.
#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Readiness and the config generation served (exit 1 when not ready).
    Status,
    /// Reload the configuration file and wait for the outcome: exit 0 when
    /// the new configuration serves, 1 (with every problem) when it was
    /// rejected and the old one keeps serving.
    Reload,
    /// Every view with its prefixes and records (JSON).
    Views,
    /// The server's Prometheus metrics, optionally only series whose name
    /// starts with PREFIX.
    Stats {
        /// Only series whose name starts with this.
        prefix: Option<String>,
    },
    /// Read or change the address map through the admin API.
    #[command(subcommand)]
    Map(MapCommand),
}

/// `ctl map` subcommands.
#[derive(Subcommand, Debug)]
pub enum MapCommand {
    /// Print one view (or all views) as JSON.
    Get {
        /// The view; all views when left out.
        view: Option<String>,
    },
    /// Apply changes, all or none, from a JSON file (`-` = stdin) in the
    /// format of `POST /v1/changes` (README "Admin API").
    Set {
        /// JSON file with a list of changes, or `-` for stdin.
        file: PathBuf,
    },
}

/// Where and how to reach the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// Read the admin address and token from a configuration text. Only the
/// `[server]` table is read, leniently, so `ctl reload` still works (and
/// reports the server's verdict) when the rest of the file is broken.
/// `token_file` reads a token file named by `admin_token_file` (relative
/// paths resolve against `base_dir`).
pub fn admin_from_toml(
    text: &str,
    base_dir: &Path,
    token_file: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Admin, String> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not valid TOML: {}", one_line(&e.to_string())))?;
    let server = doc.get("server").and_then(|v| v.as_table());
    let get = |key: &str| server.and_then(|s| s.get(key));
    let addr = match get("admin_listen") {
        None => DEFAULT_ADMIN.parse().expect("valid default"),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("server.admin_listen = {v} is not an \"IP:PORT\" string"))?,
    };
    let token = match (get("admin_token"), get("admin_token_file")) {
        (Some(t), _) => Some(
            t.as_str()
                .ok_or("server.admin_token is not a string")?
                .to_string(),
        ),
        (None, Some(f)) => {
            let f = f
                .as_str()
                .ok_or("server.admin_token_file is not a string")?;
            let path = base_dir.join(f);
            let text = token_file(&path).map_err(|e| {
                format!(
                    "cannot read server.admin_token_file {}: {e} (run as a user that may read it, e.g. root)",
                    path.display()
                )
            })?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    };
    Ok(Admin { addr, token })
}

/// An HTTP/1.1 request for the admin API.
pub fn build_request(method: &str, path: &str, admin: &Admin, body: Option<&[u8]>) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardgate-ctl\r\nConnection: close\r\n",
        admin.addr
    );
    if let Some(token) = &admin.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Status code and body of a complete HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("truncated HTTP response".into()),
        Err(e) => return Err(format!("malformed HTTP response: {e}")),
    };
    let code = resp.code.ok_or("HTTP response without a status")?;
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = &raw[head_len..];
    let body = match length {
        Some(n) if n <= body.len() => &body[..n],
        Some(_) => return Err("truncated HTTP response body".into()),
        None => body,
    };
    Ok((code, body.to_vec()))
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// Could not connect, or no complete answer in time.
    Unreachable(String),
    /// Answered, but not HTTP we understand.
    Protocol(String),
}

/// Send one request and read the whole response.
pub fn exchange(admin: &Admin, request: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
    let unreachable = |e: std::io::Error| {
        Failure::Unreachable(format!(
            "admin API at {} unreachable: {e} (is shardgate running? is server.admin_listen in the config \
             the address it serves on?)",
            admin.addr
        ))
    };
    let mut stream = TcpStream::connect_timeout(&admin.addr, TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream.write_all(request).map_err(unreachable)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(unreachable)?;
    parse_response(&raw).map_err(Failure::Protocol)
}

/// Run `shardgate ctl`.
pub fn main(args: CtlArgs) -> ExitCode {
    let source = args.config.display().to_string();
    let mut admin = match std::fs::read_to_string(&args.config) {
        Ok(text) => {
            let base = match args.config.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            match admin_from_toml(&text, base, |p| std::fs::read_to_string(p)) {
                Ok(a) => a,
                Err(e) if matches!(args.command, CtlCommand::Reload) && args.admin.is_none() => {
                    // The server would reject this file too: a failed reload.
                    eprintln!(
                        "shardgate ctl: {source}: {e}; not reloaded, the running configuration keeps \
                         serving (`shardgate check-config {source}` lists the problems)"
                    );
                    return ExitCode::from(EXIT_REFUSED);
                }
                Err(e) => return usage(&format!("{source}: {e}")),
            }
        }
        Err(e) if args.admin.is_some() => {
            tracing::debug!("{source}: {e}; using --admin without a token");
            Admin {
                addr: DEFAULT_ADMIN.parse().expect("valid default"),
                token: None,
            }
        }
        Err(e) => {
            return usage(&format!(
            "cannot read {source}: {e}; name the server's config with --config FILE (or the admin \
                 address with --admin IP:PORT)"
        ))
        }
    };
    if let Some(addr) = args.admin {
        admin.addr = addr;
    }
    match args.command {
        CtlCommand::Status => status(&admin),
        CtlCommand::Reload => reload(&admin),
        CtlCommand::Views => get_json(&admin, "/v1/views"),
        CtlCommand::Stats { prefix } => stats(&admin, prefix.as_deref()),
        CtlCommand::Map(MapCommand::Get { view: None }) => get_json(&admin, "/v1/views"),
        CtlCommand::Map(MapCommand::Get { view: Some(v) }) => {
            get_json(&admin, &format!("/v1/views/{}", percent_encode(&v)))
        }
        CtlCommand::Map(MapCommand::Set { file }) => map_set(&admin, &file),
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("shardgate ctl: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// One request; on a transport failure prints why and gives the exit code.
fn call(
    admin: &Admin,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Value), ExitCode> {
    match exchange(admin, &build_request(method, path, admin, body)) {
        Ok((code, body)) => {
            if code == 401 {
                eprintln!(
                    "shardgate ctl: the admin API refused the token (401): set server.admin_token or \
                     admin_token_file in the config that --config names to the server's token"
                );
                return Err(ExitCode::from(EXIT_USAGE));
            }
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            Ok((code, value))
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("shardgate ctl: {m}");
            Err(ExitCode::from(EXIT_UNREACHABLE))
        }
        Err(Failure::Protocol(m)) => {
            eprintln!("shardgate ctl: {} answered: {m}", admin.addr);
            Err(ExitCode::from(EXIT_REFUSED))
        }
    }
}

fn status(admin: &Admin) -> ExitCode {
    let (code, ready) = match call(admin, "GET", "/readyz", None) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let (_, state) = match call(admin, "GET", "/v1/state", None) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let version = state.get("version").cloned().unwrap_or(Value::Null);
    if code == 200 {
        println!("ready: every shard serves; config generation {version}");
        ExitCode::from(EXIT_OK)
    } else {
        let waiting = ready
            .get("waiting_for")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_else(|| ready.to_string());
        println!("not ready ({code}): {waiting}; config generation {version}");
        ExitCode::from(EXIT_REFUSED)
    }
}

fn reload(admin: &Admin) -> ExitCode {
    let (code, body) = match call(admin, "POST", "/v1/reload", None) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let version = body.get("version").cloned().unwrap_or(Value::Null);
    if code == 200 {
        println!("reloaded: serving config generation {version}");
        return ExitCode::from(EXIT_OK);
    }
    let error = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    eprintln!("shardgate ctl: reload refused ({code}): {error}");
    for p in body
        .get("problems")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let line = p.get("line").and_then(Value::as_u64);
        let key = p.get("key").and_then(Value::as_str).unwrap_or_default();
        let message = p.get("message").and_then(Value::as_str).unwrap_or_default();
        match line {
            Some(l) => eprintln!("  line {l}: {key}: {message}"),
            None => eprintln!("  {key}: {message}"),
        }
    }
    eprintln!("still serving config generation {version}");
    ExitCode::from(EXIT_REFUSED)
}

fn get_json(admin: &Admin, path: &str) -> ExitCode {
    match call(admin, "GET", path, None) {
        Ok((code, body)) => print_outcome(code, &body),
        Err(e) => e,
    }
}

fn stats(admin: &Admin, prefix: Option<&str>) -> ExitCode {
    let (code, body) = match call(admin, "GET", "/metrics", None) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let text = body.as_str().unwrap_or_default();
    if code != 200 {
        eprintln!("shardgate ctl: /metrics answered {code}: {text}");
        return ExitCode::from(EXIT_REFUSED);
    }
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        if prefix.is_none_or(|p| name.starts_with(p)) {
            println!("{line}");
        }
    }
    ExitCode::from(EXIT_OK)
}

fn map_set(admin: &Admin, file: &Path) -> ExitCode {
    let body = if file == Path::new("-") {
        let mut b = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut b) {
            return usage(&format!("cannot read stdin: {e}"));
        }
        b
    } else {
        match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => return usage(&format!("cannot read {}: {e}", file.display())),
        }
    };
    if let Err(e) = serde_json::from_slice::<Value>(&body) {
        return usage(&format!(
            "{}: not JSON ({e}); give a list of changes as POST /v1/changes takes it",
            file.display()
        ));
    }
    match call(admin, "POST", "/v1/changes", Some(&body)) {
        Ok((code, body)) => print_outcome(code, &body),
        Err(e) => e,
    }
}

fn print_outcome(code: u16, body: &Value) -> ExitCode {
    let text = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
    if (200..300).contains(&code) {
        println!("{text}");
        ExitCode::from(EXIT_OK)
    } else {
        eprintln!("shardgate ctl: refused ({code}): {text}");
        ExitCode::from(EXIT_REFUSED)
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_file(_: &Path) -> std::io::Result<String> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    #[test]
    fn admin_address_and_token_come_from_the_server_table() {
        let a = admin_from_toml("", Path::new("/etc"), no_file).unwrap();
        assert_eq!(a.addr, "127.0.0.1:9353".parse().unwrap());
        assert_eq!(a.token, None);
        let a = admin_from_toml(
            "[server]\nadmin_listen = \"127.0.0.2:9999\"\nadmin_token = \"0123456789abcdef\"\n[[view]]\nbroken = 1\n",
            Path::new("/etc"),
            no_file,
        )
        .unwrap();
        assert_eq!(a.addr, "127.0.0.2:9999".parse().unwrap());
        assert_eq!(a.token.as_deref(), Some("0123456789abcdef"));
        let a = admin_from_toml(
            "[server]\nadmin_token_file = \"tok\"\n",
            Path::new("/etc/shardgate"),
            |p| {
                assert_eq!(p, Path::new("/etc/shardgate/tok"));
                Ok("secret-token-123456\nignored\n".into())
            },
        )
        .unwrap();
        assert_eq!(a.token.as_deref(), Some("secret-token-123456"));
        let e = admin_from_toml(
            "[server]\nadmin_token_file = \"tok\"\n",
            Path::new("/x"),
            no_file,
        )
        .unwrap_err();
        assert!(e.contains("/x/tok"), "{e}");
        assert!(admin_from_toml("[server]\nadmin_listen = 5\n", Path::new("/"), no_file).is_err());
        assert!(admin_from_toml("[server\n", Path::new("/"), no_file).is_err());
    }

    #[test]
    fn requests_carry_the_token_and_body_length() {
        let admin = Admin {
            addr: "127.0.0.1:9353".parse().unwrap(),
            token: Some("t0k".into()),
        };
        let r = String::from_utf8(build_request("POST", "/v1/reload", &admin, None)).unwrap();
        assert!(r.starts_with("POST /v1/reload HTTP/1.1\r\n"));
        assert!(r.contains("Authorization: Bearer t0k\r\n"));
        assert!(r.contains("Content-Length: 0\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let r = build_request(
            "GET",
            "/readyz",
            &Admin {
                token: None,
                ..admin
            },
            None,
        );
        let r = String::from_utf8(r).unwrap();
        assert!(!r.contains("Authorization") && !r.contains("Content-Length"));
    }

    #[test]
    fn responses_parse_with_and_without_length() {
        let (code, body) =
            parse_response(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}extra")
                .unwrap();
        assert_eq!((code, body.as_slice()), (400, &b"{}"[..]));
        let (code, body) = parse_response(b"HTTP/1.1 200 OK\r\n\r\nready\n").unwrap();
        assert_eq!((code, body.as_slice()), (200, &b"ready\n"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn view_names_are_escaped() {
        assert_eq!(percent_encode("site-a"), "site-a");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
