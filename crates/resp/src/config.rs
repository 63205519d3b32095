//! The settings of the RESP front end: every limit the server enforces on
//! clients, with Redis-like defaults.
//!
//! Memory a client can make the node hold is bounded by
//! `connections_max * input_buffer_bytes_max` for requests, and by the reply
//! flush threshold plus one reply (at most `reply_bytes_max` for MGET) for
//! answers.

use crate::frame::Limits;

/// Most arguments of a request before the connection authenticated
/// (Redis' limit for unauthenticated clients).
pub const UNAUTHENTICATED_ARGS_MAX: usize = 10;
/// Largest bulk before the connection authenticated (Redis' limit).
pub const UNAUTHENTICATED_BULK_BYTES_MAX: usize = 16 * 1024;

/// Settings of the RESP server.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Most client connections open at once. Connections past it are answered
    /// `-ERR max number of clients reached` and closed at accept. Redis'
    /// `maxclients` default.
    pub connections_max: usize,
    /// Largest input buffer of one connection, in bytes: the largest single
    /// request a client may send. Pipelined requests do not add up, since
    /// every complete request is executed before more bytes are read. Must
    /// hold at least one `bulk_bytes_max` argument.
    pub input_buffer_bytes_max: usize,
    /// Largest bulk string (one argument), in bytes. It is above the node's
    /// value limit (1 MiB by default) on purpose: a value between the two is
    /// refused with a clear error and the connection stays open, while a bulk
    /// past this limit is a protocol error that closes the connection.
    pub bulk_bytes_max: usize,
    /// Most arguments of one request, the command name included. Each
    /// costs about 48 bytes of bookkeeping beyond its bytes on the wire, so
    /// the default (65,536: an MSET of 32,767 keys) bounds that at about
    /// 3 MiB a request.
    pub args_max: usize,
    /// Longest inline request line (telnet style), in bytes.
    pub inline_bytes_max: usize,
    /// A connection that completes no request for this long is closed (so is
    /// one whose client stops reading replies for this long). Drip-feeding a
    /// request byte by byte does not keep a connection open: the clock only
    /// restarts when a whole request arrives. 0 disables the timeout.
    pub idle_timeout_ms: u64,
    /// Replies are written once this many bytes are buffered, even in the
    /// middle of a pipelined batch; otherwise once per batch.
    pub reply_flush_bytes_max: usize,
    /// Largest reply one multi-key read (MGET) may build, in bytes; past it
    /// the command fails instead of buffering without bound.
    pub reply_bytes_max: usize,
    /// Most keys of one multi-key command (MGET, DEL, EXISTS, MSET) in flight
    /// against the cluster at once.
    pub key_fanout_max: usize,
    /// When set, clients must `AUTH [user] <password>` (or `HELLO ... AUTH
    /// <user> <password>`) before any other command, and may then run what
    /// their roles and key patterns allow. `AUTH <password>` is the user
    /// `default`. Until then a request may have at most
    /// [`UNAUTHENTICATED_ARGS_MAX`] arguments of [`UNAUTHENTICATED_BULK_BYTES_MAX`]
    /// bytes (as Redis), and a connection not authenticated within
    /// `auth_timeout_ms` is closed.
    pub users: Option<std::sync::Arc<ringkv_auth::Users>>,
    /// Time a connection has to authenticate when users are set; 0: none.
    pub auth_timeout_ms: u64,
    /// When set, every connection speaks TLS (as `redis-server --tls-port`):
    /// the handshake has [`TLS_HANDSHAKE_TIMEOUT`](crate::TLS_HANDSHAKE_TIMEOUT).
    pub tls: Option<std::sync::Arc<ringkv_cluster::net::client_tls::ClientTls>>,
}

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            connections_max: 10_000,
            input_buffer_bytes_max: 16 * 1024 * 1024,
            bulk_bytes_max: 8 * 1024 * 1024,
            args_max: 64 * 1024,
            inline_bytes_max: 64 * 1024,
            idle_timeout_ms: 300_000,
            reply_flush_bytes_max: 64 * 1024,
            reply_bytes_max: 64 * 1024 * 1024,
            key_fanout_max: 64,
            users: None,
            tls: None,
            auth_timeout_ms: 10_000,
        }
    }
}

impl RespConfig {
    /// The parser limits this config implies.
    pub fn limits(&self) -> Limits {
        Limits {
            bulk_bytes_max: self.bulk_bytes_max,
            args_max: self.args_max,
            inline_bytes_max: self.inline_bytes_max,
            request_bytes_max: self.input_buffer_bytes_max,
            nesting_depth_max: Limits::default().nesting_depth_max,
            unauthenticated: false,
        }
    }

    /// The tighter limits of a connection that has not authenticated.
    pub fn unauthenticated_limits(&self) -> Limits {
        let mut limits = self.limits();
        limits.args_max = limits.args_max.min(UNAUTHENTICATED_ARGS_MAX);
        limits.bulk_bytes_max = limits.bulk_bytes_max.min(UNAUTHENTICATED_BULK_BYTES_MAX);
        limits.inline_bytes_max = limits.inline_bytes_max.min(UNAUTHENTICATED_BULK_BYTES_MAX);
        limits.request_bytes_max = limits
            .request_bytes_max
            .min(UNAUTHENTICATED_ARGS_MAX * (UNAUTHENTICATED_BULK_BYTES_MAX + 32));
        limits.unauthenticated = true;
        limits
    }

    /// Checks that the limits are consistent with each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections_max == 0 {
            return Err("connections_max must be at least 1".into());
        }
        if self.args_max == 0 || self.inline_bytes_max == 0 || self.key_fanout_max == 0 {
            return Err("args_max, inline_bytes_max and key_fanout_max must be at least 1".into());
        }
        if self.input_buffer_bytes_max < self.bulk_bytes_max + 64 {
            return Err(format!(
                "input_buffer_bytes_max ({}) must hold one bulk_bytes_max ({}) argument",
                self.input_buffer_bytes_max, self.bulk_bytes_max
            ));
        }
        if self.input_buffer_bytes_max < self.inline_bytes_max {
            return Err(format!(
                "input_buffer_bytes_max ({}) must hold one inline_bytes_max ({}) line",
                self.input_buffer_bytes_max, self.inline_bytes_max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent_and_fit_the_value_limit() {
        let config = RespConfig::default();
        assert_eq!(config.validate(), Ok(()));
        // The node's default value limit (1 MiB) plus slack must fit a bulk.
        assert!(config.bulk_bytes_max >= 2 * 1024 * 1024);
        let bad = RespConfig {
            input_buffer_bytes_max: 1024,
            ..RespConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
