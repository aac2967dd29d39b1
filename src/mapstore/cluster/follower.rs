//! The control thread that talks to etcd, on a tokio runtime of its own
//! (the shards never wait on it): connect, read a snapshot of the prefix
//! at one revision (or resume from the applied revision), watch from the
//! next revision, hand each watch response to [`ClusterMap::apply`]. On any
//! failure: mark etcd down (the last applied map keeps serving), back off,
//! reconnect and resume from the last revision seen; a compacted revision
//! triggers a fresh snapshot. [`Link::write`] runs the admin API's
//! transactions on the same runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, WatchOptions,
};

use super::layout::KeyOp;
use super::mirror::{Event, Mirror};
use super::ClusterMap;
use crate::config::ClusterConfig;

/// Keys per snapshot page (each a view or a record set; a view of 1,000
/// prefixes is about 20 KB).
const SNAPSHOT_PAGE: i64 = 200;
/// Largest etcd response accepted: above etcd's own 1.5 MiB request limit
/// times a snapshot page, and above tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Reconnect back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a write transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Committed at this revision.
    Committed(i64),
    /// A compared key had moved: nothing was written.
    Conflict,
}

/// The connection to etcd: runtime, endpoints, options, a cached client.
pub struct Link {
    runtime: tokio::runtime::Runtime,
    endpoints: Vec<String>,
    options: ConnectOptions,
    dial_timeout: Duration,
    request_timeout: Duration,
    prefix: String,
    client: Mutex<Option<Client>>,
}

impl Link {
    /// Read the TLS and password files and build the runtime. Errors name
    /// the file and what to do.
    pub fn new(config: &ClusterConfig, base_dir: &Path) -> anyhow::Result<Link> {
        let read = |key: &str, file: &str| {
            let path = base_dir.join(file);
            std::fs::read(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {key} {}: {e}; check the path and that shardgate may read it",
                    path.display()
                )
            })
        };
        let dial_timeout = Duration::from_millis(config.dial_timeout_ms);
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(dial_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(file)) = (&config.user, &config.password_file) {
            let text = read("cluster.password_file", file)?;
            let password = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            options = options.with_user(user.clone(), password);
        }
        if let Some(ca) = &config.ca_file {
            let mut tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read("cluster.ca_file", ca)?));
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read("cluster.cert_file", cert)?,
                    read("cluster.key_file", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cluster-etcd")
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the cluster control runtime: {e}"))?;
        Ok(Link {
            runtime,
            endpoints: config.etcd.clone(),
            options,
            dial_timeout,
            request_timeout,
            prefix: config.prefix.clone(),
            client: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Client, String> {
        if let Some(c) = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let client = tokio::time::timeout(
            self.dial_timeout,
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
        .map_err(|_| {
            format!(
                "no answer from {} within {:?}",
                self.endpoints.join(", "),
                self.dial_timeout
            )
        })?
        .map_err(|e| format!("cannot connect to {}: {e}", self.endpoints.join(", ")))?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }

    fn forget_client(&self) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// One transaction: if every `(key, mod_revision)` still holds, apply
    /// `ops`. Blocks the calling (admin) thread up to `timeout`.
    pub fn write(
        &self,
        compares: &[(String, i64)],
        ops: &[KeyOp],
        timeout: Duration,
    ) -> Result<Written, String> {
        let txn = Txn::new()
            .when(
                compares
                    .iter()
                    .map(|(k, rev)| Compare::mod_revision(k.as_str(), CompareOp::Equal, *rev))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                ops.iter()
                    .map(|op| match op {
                        KeyOp::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
                        KeyOp::Delete(k) => TxnOp::delete(k.as_str(), None),
                    })
                    .collect::<Vec<_>>(),
            );
        self.runtime.block_on(async {
            let client = self.connect().await?;
            let resp = tokio::time::timeout(timeout, client.kv_client().txn(txn))
                .await
                .map_err(|_| format!("etcd did not answer the transaction within {timeout:?}"))?
                .map_err(|e| format!("etcd refused the transaction: {e}"))?;
            if !resp.succeeded() {
                return Ok(Written::Conflict);
            }
            Ok(Written::Committed(
                resp.header().map_or(0, |h| h.revision()),
            ))
        })
    }

    /// Every key under the prefix at one revision, page by page.
    async fn snapshot(&self, client: &Client) -> Result<Mirror, String> {
        let end = prefix_end(&self.prefix);
        let mut from = self.prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(SNAPSHOT_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut kv = client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            let resp =
                tokio::time::timeout(self.request_timeout, kv.get(from.clone(), Some(options)))
                    .await
                    .map_err(|_| {
                        format!(
                            "etcd did not answer the snapshot read within {:?}",
                            self.request_timeout
                        )
                    })?
                    .map_err(|e| format!("snapshot read failed: {e}"))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                kvs.push((key, kv.value().to_vec(), kv.mod_revision()));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Mirror::from_snapshot(&self.prefix, revision, kvs))
    }
}

/// The end of the key range of `prefix` (its last byte plus one).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Start the control thread.
pub fn spawn(map: Arc<ClusterMap>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("cluster-follow".into())
        .spawn(move || {
            let link = &map.client;
            link.runtime.block_on(follow(&map));
        })
        .map_err(|e| anyhow::anyhow!("cannot start the cluster follower thread: {e}"))?;
    Ok(())
}

async fn follow(map: &ClusterMap) {
    let mut latest = map.lock().mirror.clone();
    let mut backoff = BACKOFF_MIN;
    let mut reported = false;
    loop {
        let before = latest.revision;
        let e = follow_once(map, &mut latest).await;
        map.client.forget_client();
        if latest.revision > before {
            backoff = BACKOFF_MIN;
        }
        if !reported || map.lock().down.is_none() {
            tracing::warn!(
                "cluster: lost etcd ({e}); serving the last applied map (revision {}), retrying",
                map.revision()
            );
            reported = true;
        }
        map.set_down(Some(e));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follow until something fails; returns why.
async fn follow_once(map: &ClusterMap, latest: &mut Mirror) -> String {
    let link = &map.client;
    let client = match link.connect().await {
        Ok(c) => c,
        Err(e) => return e,
    };
    if latest.revision == 0 {
        match link.snapshot(&client).await {
            Ok(m) => {
                crate::metrics::cluster::record_snapshot("start");
                tracing::info!(
                    "cluster: read the fleet map at revision {} ({} key(s))",
                    m.revision,
                    m.entries.len()
                );
                *latest = m;
                map.set_down(None);
                map.apply(latest.clone(), latest.revision);
            }
            Err(e) => return e,
        }
    }
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(latest.revision + 1)
            .with_progress_notify();
        let mut stream = match tokio::time::timeout(
            link.request_timeout,
            client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .watch(link.prefix.as_str(), Some(options)),
        )
        .await
        {
            Err(_) => {
                return format!(
                    "etcd did not open the watch within {:?}",
                    link.request_timeout
                )
            }
            Ok(Err(e)) => return format!("cannot watch {}: {e}", link.prefix),
            Ok(Ok(s)) => s,
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return "etcd closed the watch".into(),
                Err(e) => return format!("the watch failed: {e}"),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    tracing::warn!(
                        "cluster: revision {} was compacted away (etcd keeps from {}); reading a fresh snapshot",
                        latest.revision + 1,
                        resp.compact_revision()
                    );
                    match link.snapshot(&client).await {
                        Ok(m) => {
                            crate::metrics::cluster::record_snapshot("compacted");
                            *latest = m;
                            map.apply(latest.clone(), latest.revision);
                            break;
                        }
                        Err(e) => return e,
                    }
                }
                return format!("etcd cancelled the watch: {}", resp.cancel_reason());
            }
            if resp.created() {
                map.set_down(None);
            }
            let header = resp.header().map_or(0, |h| h.revision());
            let mut events = Vec::with_capacity(resp.events().len());
            let mut top = 0;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                top = top.max(kv.mod_revision());
                events.push(match ev.event_type() {
                    EventType::Put => Event::Put {
                        key,
                        value: kv.value().to_vec(),
                        mod_revision: kv.mod_revision(),
                    },
                    EventType::Delete => Event::Delete {
                        key,
                        revision: kv.mod_revision(),
                    },
                });
            }
            if events.is_empty() {
                // A progress notification: every event up to `header` was
                // sent, so the applied revision may move there.
                if !resp.created() && header > latest.revision {
                    latest.revision = header;
                    map.apply(latest.clone(), header);
                }
                continue;
            }
            latest.apply(&events, top);
            map.apply(latest.clone(), header);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_after_every_key_under_it() {
        assert_eq!(prefix_end("/shardgate/"), b"/shardgate0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
