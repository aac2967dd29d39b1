//! `shardgate invoke`: call a function over UDP (invocation frame) or HTTP
//! and print its output; errors go to stderr with a non-zero exit status.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::frame;
use super::http::STATUS_HEADER;
use super::outcome::Status;

/// Arguments of `shardgate invoke`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("transport").required(true).args(["udp", "http"])))]
#[command(group(clap::ArgGroup::new("input").args(["data", "file"])))]
pub struct InvokeCli {
    /// Send an invocation frame over UDP to ADDR (host:port, e.g. 127.0.0.1:8054).
    #[arg(long, value_name = "ADDR")]
    pub udp: Option<String>,
    /// POST /fn/NAME over HTTP/1.1 to ADDR (host:port).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// The function to invoke.
    pub name: String,
    /// Input given on the command line (default: empty input).
    #[arg(long, value_name = "STR")]
    pub data: Option<String>,
    /// Input read from a file (`-` = standard input).
    #[arg(long, value_name = "F")]
    pub file: Option<PathBuf>,
    /// Print the output as hex instead of raw bytes.
    #[arg(long)]
    pub hex: bool,
    /// Give up after this long, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// Exit status: the function failed (its error is printed).
pub const EXIT_FUNCTION_ERROR: u8 = 1;
/// Exit status: bad arguments or unreadable input.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: no answer (timeout, refused, not a shardgate reply).
pub const EXIT_NETWORK: u8 = 3;

/// Why an invocation did not return output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The server answered with an error status and text.
    Function {
        status: String,
        code: Option<u16>,
        text: String,
    },
    Usage(String),
    Network(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Function {
                status,
                code: Some(code),
                text,
            } => write!(f, "{status} (HTTP {code}): {}", text.trim_end()),
            ClientError::Function { status, text, .. } => {
                write!(f, "{status}: {}", text.trim_end())
            }
            ClientError::Usage(m) | ClientError::Network(m) => f.write_str(m),
        }
    }
}

/// `shardgate invoke`: print the output to stdout or the error to stderr.
pub fn main(args: InvokeCli) -> ExitCode {
    let result = read_input(&args).and_then(|input| match (&args.udp, &args.http) {
        (Some(addr), _) => invoke_udp(
            addr,
            &args.name,
            &input,
            Duration::from_millis(args.timeout_ms),
        ),
        (None, Some(addr)) => invoke_http(
            addr,
            &args.name,
            &input,
            Duration::from_millis(args.timeout_ms),
        ),
        (None, None) => Err(ClientError::Usage("give --udp ADDR or --http ADDR".into())),
    });
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            let written = if args.hex {
                let hex: String = output.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(stdout, "{hex}")
            } else {
                stdout.write_all(&output)
            };
            match written.and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shardgate invoke: cannot write the output: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Err(e) => {
            eprintln!("shardgate invoke: {}: {e}", args.name);
            ExitCode::from(match e {
                ClientError::Function { .. } => EXIT_FUNCTION_ERROR,
                ClientError::Usage(_) => EXIT_USAGE,
                ClientError::Network(_) => EXIT_NETWORK,
            })
        }
    }
}

fn read_input(args: &InvokeCli) -> Result<Vec<u8>, ClientError> {
    match (&args.data, &args.file) {
        (Some(d), _) => Ok(d.clone().into_bytes()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| ClientError::Usage(format!("cannot read standard input: {e}")))?;
            Ok(v)
        }
        (None, Some(p)) => std::fs::read(p)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", p.display()))),
        (None, None) => Ok(Vec::new()),
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    addr.to_socket_addrs()
        .map_err(|e| ClientError::Usage(format!("cannot resolve {addr}: {e} (use host:port)")))?
        .next()
        .ok_or_else(|| ClientError::Usage(format!("{addr} resolves to no address")))
}

fn request_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn status_error(status: Result<Status, u8>, code: Option<u16>, body: &[u8]) -> ClientError {
    ClientError::Function {
        status: match status {
            Ok(s) => s.as_str().to_string(),
            Err(c) => format!("status {c}"),
        },
        code,
        text: String::from_utf8_lossy(body).into_owned(),
    }
}

/// Invoke over UDP: one frame, wait for the reply with our request id
/// (resending once halfway through the timeout).
pub fn invoke_udp(
    addr: &str,
    name: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let to = resolve(addr)?;
    let id = request_id();
    let mut req = Vec::new();
    frame::encode_request(&mut req, id, name, input).map_err(ClientError::Usage)?;
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(to)
    } else {
        "[::]:0".parse().unwrap_or(to)
    };
    let net = |e: std::io::Error| ClientError::Network(format!("UDP to {to}: {e}"));
    let sock = UdpSocket::bind(local).map_err(net)?;
    sock.connect(to).map_err(net)?;
    sock.send(&req).map_err(net)?;
    let start = Instant::now();
    let mut resent = false;
    let mut buf = vec![0u8; 65_536];
    loop {
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(ClientError::Network(format!(
                "no reply from {to} within {} ms: is shardgate serving functions there (functions.listen)?",
                timeout.as_millis()
            )));
        }
        let wait = if resent {
            timeout - elapsed
        } else {
            (timeout / 2).saturating_sub(elapsed)
        };
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(net)?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let Some(reply) = frame::decode_reply(&buf[..n]) else {
                    continue;
                };
                if reply.id != id {
                    continue;
                }
                return match reply.status {
                    Ok(Status::Ok) => Ok(reply.body.to_vec()),
                    other => Err(status_error(other, None, reply.body)),
                };
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !resent {
                    resent = true;
                    sock.send(&req).map_err(net)?;
                }
            }
            Err(e) => return Err(net(e)),
        }
    }
}

/// Invoke over HTTP/1.1: `POST /fn/<name>`, `Connection: close`.
pub fn invoke_http(
    addr: &str,
    name: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    if !crate::config::functions::valid_name(name) {
        return Err(ClientError::Usage(format!(
            "{name:?} is not a valid function name: use 1-64 characters of A-Z a-z 0-9 _ - ."
        )));
    }
    let to = resolve(addr)?;
    let net = |e: std::io::Error| ClientError::Network(format!("HTTP to {to}: {e}"));
    let mut stream = TcpStream::connect_timeout(&to, timeout).map_err(net)?;
    stream.set_read_timeout(Some(timeout)).map_err(net)?;
    stream.set_write_timeout(Some(timeout)).map_err(net)?;
    let mut req = format!(
        "POST /fn/{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        input.len()
    )
    .into_bytes();
    req.extend_from_slice(input);
    stream.write_all(&req).map_err(net)?;
    let mut resp = Vec::new();
    loop {
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&chunk[..n]),
            Err(e) if resp.is_empty() => return Err(net(e)),
            Err(_) => break,
        }
        if let Some((head, body_len)) = parsed_len(&resp) {
            if resp.len() >= head + body_len {
                break;
            }
        }
    }
    parse_http_response(&resp).map_err(|e| match e {
        ClientError::Network(m) => ClientError::Network(format!("{to}: {m}")),
        other => other,
    })
}

fn parsed_len(resp: &[u8]) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(resp) {
        Ok(httparse::Status::Complete(head)) => {
            let len = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())?;
            Some((head, len))
        }
        _ => None,
    }
}

/// Parse a complete HTTP response: `Ok(body)` for 200, otherwise the error.
pub fn parse_http_response(resp: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(resp) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => {
            return Err(ClientError::Network(
                "not an HTTP response (or cut short)".into(),
            ))
        }
    };
    let code = r.code.unwrap_or(0);
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let len = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
    let body = match len {
        Some(n) if resp.len() >= head + n => &resp[head..head + n],
        Some(_) => return Err(ClientError::Network("response body cut short".into())),
        None => &resp[head..],
    };
    if code == 200 {
        return Ok(body.to_vec());
    }
    Err(ClientError::Function {
        status: header(STATUS_HEADER).unwrap_or("error").to_string(),
        code: Some(code),
        text: String::from_utf8_lossy(body).into_owned(),
    })
}
