//! The metric families this crate records, with their meaning.
//!
//! [`describe`] gives each its HELP text (the binary calls it once the
//! recorder is installed) and shows the unlabelled counters at 0 from the
//! start, so an alert or a rate over them works before the first event.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Counters without labels, shown at 0 from the start.
const COUNTERS: &[(&str, &str)] = &[
    (
        "ringkv_peer_records_refused_total",
        "Records from peers refused (bad encoding, over the limits)",
    ),
    (
        "ringkv_departed_requests_refused_total",
        "Requests refused because they came from a node that left the cluster",
    ),
    (
        "ringkv_read_repairs_total",
        "Replicas brought up to date by read repair",
    ),
    (
        "ringkv_read_repairs_skipped_total",
        "Read repairs skipped because the background queue was full",
    ),
    (
        "ringkv_stand_in_writes_total",
        "Writes taken by this node as a stand-in for a down replica (sloppy quorum)",
    ),
    (
        "ringkv_hints_stored_total",
        "Hints stored for down replicas",
    ),
    (
        "ringkv_incomplete_writes_total",
        "Writes sent to replicas that missed their level (outcome unknown, not undone)",
    ),
    (
        "ringkv_hints_replayed_total",
        "Hints delivered to their replica",
    ),
    (
        "ringkv_cleanup_keys_total",
        "Keys dropped after their range moved away",
    ),
    (
        "ringkv_stream_keys_total",
        "Records streamed to joining or taking-over nodes",
    ),
    (
        "ringkv_stream_bytes_total",
        "Bytes streamed to joining or taking-over nodes",
    ),
    (
        "ringkv_stream_checksum_failures_total",
        "Streamed batches refused for a bad checksum (retried)",
    ),
    (
        "ringkv_gossip_states_refused_total",
        "Gossiped node states refused (bad signature, invalid, from a departed node)",
    ),
    (
        "ringkv_ae_keys_repaired_total",
        "Keys whose record anti-entropy changed here or on a peer",
    ),
    (
        "ringkv_ae_corrupt_records_skipped_total",
        "Records anti-entropy skipped because they failed to decode",
    ),
    (
        "ringkv_ae_bytes_sent_total",
        "Anti-entropy bytes sent to peers",
    ),
    (
        "ringkv_ae_bytes_received_total",
        "Anti-entropy bytes received from peers",
    ),
    (
        "ringkv_ae_sync_failures_total",
        "Anti-entropy range syncs that failed (retried)",
    ),
    (
        "ringkv_truncations_total",
        "Truncation points this node recorded (FLUSHALL, its own or spread by a peer)",
    ),
    (
        "ringkv_siblings_dropped_total",
        "Siblings dropped because a record reached siblings_max",
    ),
    (
        "ringkv_background_fanouts_full_total",
        "Background sends to replicas dropped because their queue was full",
    ),
];

/// Describes every family of this crate and shows the unlabelled counters.
pub fn describe() {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    describe_counter!(
        "ringkv_unavailable_total",
        "Requests refused before anything was sent, for too few live replicas, by op (read, write)"
    );
    describe_counter!(
        "ringkv_hints_dropped_total",
        "Hints dropped, by reason (window: the replica was down too long; full; expired; error)"
    );
    describe_counter!(
        "ringkv_gossip_exchanges_total",
        "Gossip exchanges this node started that were answered, by way (digest; whole: \
         with a node of the version before digests)"
    );
    describe_counter!(
        "ringkv_gossip_received_total",
        "Node states received by gossip, by what (state: whole; refresh: heartbeat and load only)"
    );
    describe_counter!(
        "ringkv_gossip_received_stale_total",
        "Node states received by gossip that were no news (as new as the one held), by what"
    );
    describe_counter!(
        "ringkv_cluster_connections_refused_total",
        "Connections to the cluster port refused, by reason"
    );
    describe_gauge!(
        "ringkv_ae_ranges",
        "Ranges this node replicates (anti-entropy's unit of work)"
    );
    describe_gauge!(
        "ringkv_ae_ranges_in_sync",
        "Ranges whose last anti-entropy sync with every other replica succeeded"
    );
    describe_gauge!(
        "ringkv_ae_oldest_unsynced_range_age_seconds",
        "Seconds since the least recently synced range was last synced with every replica"
    );
    describe_histogram!(
        "ringkv_coordinator_seconds",
        metrics::Unit::Seconds,
        "Time to answer a client request as its coordinator, by op (get, put, delete)"
    );
}
