//! Reading and writing a TCP connection on a shard: one read that a
//! deadline or the shard's stop signal ends, one write that a deadline
//! ends; shared by every TCP protocol (DNS in `shard::tcp`, HTTP in
//! `functions::server`).

use std::time::Duration;

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::stop::StopSignal;

/// What one bounded read of a connection brought.
pub enum Read {
    Data(usize),
    /// The peer closed the connection, or the read failed.
    Closed,
    /// Nothing arrived before the deadline.
    Deadline,
    /// The shard is stopping and the connection had nothing in flight.
    Stop,
}

/// Read once from `stream` into `chunk`, for at most `wait`. A stop signal
/// ends the wait too (`Read::Stop`), unless `finishing`: a request is in
/// flight (partly received) or the shard is already stopping, and the read
/// may complete it before the deadline. Shared by every TCP protocol of a
/// shard (DNS in `shard::tcp`, HTTP in `functions::server`).
pub async fn read_bounded(
    stream: &mut TcpStream,
    chunk: &mut [u8],
    wait: Duration,
    stop: &StopSignal,
    finishing: bool,
) -> Read {
    let read = async {
        match stream.read(chunk).await {
            Ok(0) | Err(_) => Read::Closed,
            Ok(n) => Read::Data(n),
        }
    };
    let timer = async {
        glommio::timer::sleep(wait).await;
        Read::Deadline
    };
    if finishing {
        future::or(read, timer).await
    } else {
        future::or(
            read,
            future::or(timer, async {
                stop.stopped().await;
                Read::Stop
            }),
        )
        .await
    }
}

/// Write all of `buf` to `stream` within `wait`; false when the write
/// failed or the peer did not take it in time (close the connection then:
/// a peer that does not read must not hold the shard's buffers).
pub async fn write_bounded(stream: &mut TcpStream, buf: &[u8], wait: Duration) -> bool {
    let write = async { stream.write_all(buf).await.is_ok() };
    future::or(write, async {
        glommio::timer::sleep(wait).await;
        false
    })
    .await
}
