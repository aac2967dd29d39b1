//! The fleet map's process-wide series (`[cluster]`): applied and newest
//! etcd revisions, the lag between them, whether etcd is reachable, and
//! counts of applied/rejected generations and snapshot reads. Written by the
//! cluster control thread, never on the request path.

use super::{names, PROCESS_SHARD};

/// Make the series exist at zero (alerts see the first change).
pub fn register() {
    for result in ["applied", "rejected"] {
        metrics::counter!(names::CLUSTER_CHANGES, "shard" => PROCESS_SHARD, "result" => result)
            .absolute(0);
    }
    for reason in ["start", "compacted"] {
        metrics::counter!(names::CLUSTER_SNAPSHOTS, "shard" => PROCESS_SHARD, "reason" => reason)
            .absolute(0);
    }
}

pub fn set_applied(revision: i64) {
    metrics::gauge!(names::CLUSTER_APPLIED_REVISION, "shard" => PROCESS_SHARD).set(revision as f64);
}

/// The newest revision heard of; the lag is measured against the applied
/// revision last set.
pub fn set_etcd_revision(revision: i64) {
    metrics::gauge!(names::CLUSTER_ETCD_REVISION, "shard" => PROCESS_SHARD).set(revision as f64);
}

pub fn set_lag(revisions: i64) {
    metrics::gauge!(names::CLUSTER_WATCH_LAG, "shard" => PROCESS_SHARD)
        .set(revisions.max(0) as f64);
}

pub fn set_up(up: bool) {
    metrics::gauge!(names::CLUSTER_ETCD_UP, "shard" => PROCESS_SHARD).set(if up {
        1.0
    } else {
        0.0
    });
}

/// A generation from etcd: `applied` or `rejected`.
pub fn record_change(result: &'static str) {
    metrics::counter!(names::CLUSTER_CHANGES, "shard" => PROCESS_SHARD, "result" => result)
        .increment(1);
}

/// A full read of the prefix: `start` or `compacted`.
pub fn record_snapshot(reason: &'static str) {
    metrics::counter!(names::CLUSTER_SNAPSHOTS, "shard" => PROCESS_SHARD, "reason" => reason)
        .increment(1);
}
