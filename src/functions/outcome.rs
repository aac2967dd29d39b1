//! What one invocation can end as: [`InvokeError`] (each failure mode with
//! what the operator or caller should know) and [`Status`], its code on the
//! wire (the UDP frame status byte and the HTTP status).

use std::fmt;

/// Outcome code of an invocation, shared by both surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The function ran; the payload is its output.
    Ok = 0,
    /// No function by that name on this node.
    NotFound = 1,
    /// The request itself is malformed (bad frame, bad HTTP).
    BadRequest = 2,
    /// The input is larger than the function's `max_input_bytes`.
    InputTooLarge = 3,
    /// The function trapped (unreachable, out-of-bounds access, ...).
    Trap = 4,
    /// The function ran past its `deadline_ms`.
    Deadline = 5,
    /// The function tried to grow its memory past `max_memory_kib`.
    MemoryLimit = 6,
    /// The function returned a pointer/length outside its memory.
    BadOutput = 7,
    /// The output is larger than `max_output_bytes` (or than a datagram).
    OutputTooLarge = 8,
    /// The function exists but cannot run now (failed to load, no instance).
    Unavailable = 9,
    /// The frame's version is not one this node speaks.
    UnsupportedVersion = 10,
}

impl Status {
    /// Decode a status byte; unknown codes are `None`.
    pub fn from_u8(b: u8) -> Option<Status> {
        use Status::*;
        Some(match b {
            0 => Ok,
            1 => NotFound,
            2 => BadRequest,
            3 => InputTooLarge,
            4 => Trap,
            5 => Deadline,
            6 => MemoryLimit,
            7 => BadOutput,
            8 => OutputTooLarge,
            9 => Unavailable,
            10 => UnsupportedVersion,
            _ => return None,
        })
    }

    /// The HTTP status code for this outcome.
    pub fn http_code(self) -> u16 {
        use Status::*;
        match self {
            Ok => 200,
            NotFound => 404,
            BadRequest | UnsupportedVersion => 400,
            InputTooLarge => 413,
            Trap | MemoryLimit | BadOutput | OutputTooLarge => 500,
            Deadline => 504,
            Unavailable => 503,
        }
    }

    /// Short stable name (used in logs, metrics labels and HTTP headers).
    pub fn as_str(self) -> &'static str {
        use Status::*;
        match self {
            Ok => "ok",
            NotFound => "not-found",
            BadRequest => "bad-request",
            InputTooLarge => "input-too-large",
            Trap => "trap",
            Deadline => "deadline",
            MemoryLimit => "memory-limit",
            BadOutput => "bad-output",
            OutputTooLarge => "output-too-large",
            Unavailable => "unavailable",
            UnsupportedVersion => "unsupported-version",
        }
    }
}

/// Why an invocation failed. The instance it ran in (if any) is discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    NotFound,
    /// The function failed to load (reason) or no instance could be built.
    Unavailable(String),
    InputTooLarge {
        len: usize,
        max: usize,
    },
    /// The trap message from the runtime.
    Trap(String),
    Deadline {
        ms: u32,
    },
    MemoryLimit {
        max_bytes: usize,
    },
    /// What was wrong with a pointer the function returned.
    BadOutput(String),
    OutputTooLarge {
        len: usize,
        max: usize,
    },
}

impl InvokeError {
    pub fn status(&self) -> Status {
        match self {
            InvokeError::NotFound => Status::NotFound,
            InvokeError::Unavailable(_) => Status::Unavailable,
            InvokeError::InputTooLarge { .. } => Status::InputTooLarge,
            InvokeError::Trap(_) => Status::Trap,
            InvokeError::Deadline { .. } => Status::Deadline,
            InvokeError::MemoryLimit { .. } => Status::MemoryLimit,
            InvokeError::BadOutput(_) => Status::BadOutput,
            InvokeError::OutputTooLarge { .. } => Status::OutputTooLarge,
        }
    }
}

impl fmt::Display for InvokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvokeError::NotFound => f.write_str("no such function on this node"),
            InvokeError::Unavailable(why) => write!(f, "function unavailable: {why}"),
            InvokeError::InputTooLarge { len, max } => {
                write!(
                    f,
                    "input of {len} bytes exceeds the function's max_input_bytes ({max})"
                )
            }
            InvokeError::Trap(msg) => write!(f, "function trapped: {msg}"),
            InvokeError::Deadline { ms } => write!(f, "function exceeded its deadline of {ms} ms"),
            InvokeError::MemoryLimit { max_bytes } => write!(
                f,
                "function tried to grow its memory past max_memory_kib ({} KiB)",
                max_bytes / 1024
            ),
            InvokeError::BadOutput(why) => write!(f, "function returned a bad output: {why}"),
            InvokeError::OutputTooLarge { len, max } => {
                write!(f, "output of {len} bytes exceeds the limit of {max} bytes")
            }
        }
    }
}

impl std::error::Error for InvokeError {}
