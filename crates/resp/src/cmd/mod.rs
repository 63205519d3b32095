//! Commands: the table of every command the server knows, the state a
//! command may read or change, and dispatch.
//!
//! Each family of commands lives in its own module with the same shape (as in
//! mini-redis): a type per command with `parse(args)` that checks the grammar
//! and `apply(ctx)` that calls the cluster and returns the reply. Dispatch
//! looks the name up in [`SPECS`] (the same table answers `COMMAND`), checks
//! the arity and authentication, runs the command, records its metrics, and
//! renders any error through [`CommandError::to_frame`].
//!
//! # Layout
//! - [`connection`]: PING, ECHO, SELECT, QUIT, RESET, AUTH, HELLO.
//! - [`client`]: CLIENT ID / SETNAME / GETNAME / SETINFO / INFO / NO-EVICT /
//!   NO-TOUCH / HELP.
//! - [`get`]: GET, MGET, GETDEL, STRLEN.
//! - [`set`]: SET, SETNX, SETEX, PSETEX, GETSET, MSET.
//! - [`keys`]: DEL, UNLINK, EXISTS, TYPE.
//! - [`expire`]: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL,
//!   EXPIRETIME, PEXPIRETIME, PERSIST.
//! - [`scan`]: SCAN, KEYS, RANDOMKEY (across the cluster).
//! - [`server`]: DBSIZE, INFO, CONFIG GET, TIME.
//! - [`command`]: COMMAND, COMMAND COUNT / INFO / LIST / DOCS.
//! - [`ringkv`]: RINGKV.CONSISTENCY, RINGKV.GETALL, RINGKV.PUT, RINGKV.DEL.
//! - [`types`]: counters (INCR, INCRBY, DECR, DECRBY), sets (SADD, SREM,
//!   SMEMBERS, SISMEMBER, SMISMEMBER, SCARD, SRANDMEMBER) and hashes (HSET,
//!   HMSET, HSETNX, HGET, HMGET, HDEL, HGETALL, HLEN, HEXISTS, HKEYS, HVALS,
//!   HSTRLEN, HINCRBY).
//! - [`unsupported`]: commands refused with the reason (INCR, APPEND, lists,
//!   transactions, ...).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use ringkv_cluster::{Consistency, Kv, ReadOptions, WriteOptions};

use crate::error::CommandError;
use crate::frame::{Frame, Protocol};
use crate::parse::Args;
use crate::server::Shared;

pub mod client;
pub mod cluster;
pub mod command;
pub mod connection;
pub mod diag;
pub mod expire;
pub mod get;
pub mod keys;
pub mod ringkv;
pub mod scan;
pub mod server;
pub mod set;
pub mod types;
pub mod unsupported;

/// What the server knows about one command: the facts `COMMAND` reports.
#[derive(Debug)]
pub struct Spec {
    /// Upper-case name.
    pub name: &'static str,
    /// Redis' arity: `n` exactly n arguments (the name included), `-n` at
    /// least n.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// First key, last key and step, as positions in the arguments.
    pub keys: (i64, i64, i64),
    pub group: &'static str,
    pub summary: &'static str,
}

macro_rules! command_table {
    ($(
        $id:ident: $name:literal, $arity:expr, [$($flag:literal),*], ($first:expr, $last:expr, $step:expr),
            $group:literal, $summary:literal;
    )*) => {
        /// Every command the server runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Cmd { $($id),* }

        /// The table of commands, indexed by [`Cmd`].
        pub static SPECS: &[Spec] = &[$(
            Spec {
                name: $name,
                arity: $arity,
                flags: &[$($flag),*],
                keys: ($first, $last, $step),
                group: $group,
                summary: $summary,
            }
        ),*];

        impl Cmd {
            /// The command named `upper` (already upper case).
            fn lookup(upper: &[u8]) -> Option<Cmd> {
                $(if upper == $name.as_bytes() {
                    return Some(Cmd::$id);
                })*
                None
            }
        }
    };
}

// The hot commands come first: lookup is a scan.
command_table! {
    Get: "GET", 2, ["readonly", "fast"], (1, 1, 1), "string", "Returns the resolved value of a key.";
    Set: "SET", -3, ["write", "denyoom"], (1, 1, 1), "string",
        "Sets the value of a key, with optional expiry and NX/XX conditions.";
    Ping: "PING", -1, ["fast", "stale"], (0, 0, 0), "connection", "Returns PONG, or the argument.";
    Del: "DEL", -2, ["write"], (1, -1, 1), "generic", "Deletes keys.";
    Exists: "EXISTS", -2, ["readonly", "fast"], (1, -1, 1), "generic", "Counts the keys that exist.";
    Mget: "MGET", -2, ["readonly", "fast"], (1, -1, 1), "string", "Returns the values of keys.";
    Mset: "MSET", -3, ["write", "denyoom"], (1, -1, 2), "string",
        "Sets keys; each key is written independently, without atomicity.";
    Expire: "EXPIRE", -3, ["write", "fast"], (1, 1, 1), "generic", "Sets a key's time to live in seconds.";
    Pexpire: "PEXPIRE", -3, ["write", "fast"], (1, 1, 1), "generic",
        "Sets a key's time to live in milliseconds.";
    Expireat: "EXPIREAT", -3, ["write", "fast"], (1, 1, 1), "generic",
        "Sets a key's expiry as a Unix time in seconds.";
    Pexpireat: "PEXPIREAT", -3, ["write", "fast"], (1, 1, 1), "generic",
        "Sets a key's expiry as a Unix time in milliseconds.";
    Ttl: "TTL", 2, ["readonly", "fast"], (1, 1, 1), "generic", "Returns a key's time to live in seconds.";
    Pttl: "PTTL", 2, ["readonly", "fast"], (1, 1, 1), "generic",
        "Returns a key's time to live in milliseconds.";
    Expiretime: "EXPIRETIME", 2, ["readonly", "fast"], (1, 1, 1), "generic",
        "Returns a key's expiry as a Unix time in seconds.";
    Pexpiretime: "PEXPIRETIME", 2, ["readonly", "fast"], (1, 1, 1), "generic",
        "Returns a key's expiry as a Unix time in milliseconds.";
    Persist: "PERSIST", 2, ["write", "fast"], (1, 1, 1), "generic", "Removes a key's expiry.";
    Setnx: "SETNX", 3, ["write", "denyoom", "fast"], (1, 1, 1), "string",
        "Sets a key only if it does not exist.";
    Setex: "SETEX", 4, ["write", "denyoom"], (1, 1, 1), "string", "Sets a key with a time to live in seconds.";
    Psetex: "PSETEX", 4, ["write", "denyoom"], (1, 1, 1), "string",
        "Sets a key with a time to live in milliseconds.";
    Getset: "GETSET", 3, ["write", "denyoom", "fast"], (1, 1, 1), "string",
        "Sets a key and returns its previous value.";
    Getdel: "GETDEL", 2, ["write", "fast"], (1, 1, 1), "string", "Deletes a key and returns its value.";
    Strlen: "STRLEN", 2, ["readonly", "fast"], (1, 1, 1), "string", "Returns the length of a key's value.";
    Unlink: "UNLINK", -2, ["write", "fast"], (1, -1, 1), "generic", "Deletes keys (same as DEL).";
    Type: "TYPE", 2, ["readonly", "fast"], (1, 1, 1), "generic", "Returns the type of a key.";
    Dbsize: "DBSIZE", 1, ["readonly", "fast"], (0, 0, 0), "server",
        "Counts the live keys of the cluster (from the nodes' key censuses).";
    Scan: "SCAN", -2, ["readonly"], (0, 0, 0), "generic",
        "Pages through the cluster's keys; the cursor is a place on the ring.";
    Keys: "KEYS", 2, ["readonly"], (0, 0, 0), "generic",
        "Returns the cluster's keys matching a pattern (bounded; use SCAN on large keyspaces).";
    Randomkey: "RANDOMKEY", 1, ["readonly"], (0, 0, 0), "generic", "Returns a random live key.";
    Flushall: "FLUSHALL", -1, ["write"], (0, 0, 0), "server",
        "Empties the whole cluster (a truncation: every node must be up).";
    Flushdb: "FLUSHDB", -1, ["write"], (0, 0, 0), "server",
        "Empties the whole cluster (database 0 is the only one): as FLUSHALL.";
    Info: "INFO", -1, ["stale"], (0, 0, 0), "server", "Returns information about the node and the server.";
    Config: "CONFIG", -2, ["admin", "stale"], (0, 0, 0), "server", "Reads the server's settings (GET only).";
    Time: "TIME", 1, ["fast", "stale"], (0, 0, 0), "server", "Returns the node's clock.";
    Command: "COMMAND", -1, ["stale"], (0, 0, 0), "server", "Describes the commands.";
    Client: "CLIENT", -2, ["stale"], (0, 0, 0), "connection", "Manages the connection.";
    Echo: "ECHO", 2, ["fast", "stale"], (0, 0, 0), "connection", "Returns the argument.";
    Hello: "HELLO", -1, ["fast", "stale", "no-auth"], (0, 0, 0), "connection",
        "Handshakes: selects RESP2 or RESP3, authenticates, names the connection.";
    Auth: "AUTH", -2, ["fast", "stale", "no-auth"], (0, 0, 0), "connection", "Authenticates the connection.";
    Acl: "ACL", -2, ["stale"], (0, 0, 0), "server",
        "ACL WHOAMI (the connection's user) and ACL LIST (admin: every user's rule).";
    Select: "SELECT", 2, ["fast", "stale"], (0, 0, 0), "connection", "Selects database 0 (the only one).";
    Quit: "QUIT", -1, ["fast", "stale", "no-auth"], (0, 0, 0), "connection", "Closes the connection.";
    Reset: "RESET", 1, ["fast", "stale", "no-auth"], (0, 0, 0), "connection",
        "Resets the connection's state.";
    Cluster: "CLUSTER", -2, ["stale"], (0, 0, 0), "cluster",
        "Describes the cluster to Redis Cluster clients: this node the primary of every slot.";
    Readonly: "READONLY", 1, ["fast", "stale"], (0, 0, 0), "cluster",
        "Accepted: every node serves reads of every key.";
    Readwrite: "READWRITE", 1, ["fast", "stale"], (0, 0, 0), "cluster",
        "Accepted: every node serves writes of every key.";
    Asking: "ASKING", 1, ["fast", "stale"], (0, 0, 0), "cluster",
        "Accepted: no slot ever moves between ringkv nodes.";
    Slowlog: "SLOWLOG", -2, ["admin", "stale"], (0, 0, 0), "server",
        "Reads or resets the slow log (requests slower than slowlog_slower_than_us).";
    Latency: "LATENCY", -2, ["admin", "stale"], (0, 0, 0), "server",
        "Reads or resets the latency monitor's spikes (LATEST, HISTORY, RESET).";
    RingkvConsistency: "RINGKV.CONSISTENCY", -1, ["fast"], (0, 0, 0), "ringkv",
        "Sets or reports the connection's default read and write consistency.";
    RingkvGetall: "RINGKV.GETALL", 2, ["readonly"], (1, 1, 1), "ringkv",
        "Returns every sibling of a key and its causal context.";
    RingkvPut: "RINGKV.PUT", -3, ["write", "denyoom"], (1, 1, 1), "ringkv",
        "Writes a key, superseding what the given causal context saw.";
    RingkvDel: "RINGKV.DEL", -2, ["write"], (1, 1, 1), "ringkv",
        "Deletes a key, superseding what the given causal context saw.";
    Incr: "INCR", 2, ["write", "denyoom", "fast"], (1, 1, 1), "string",
        "Adds 1 to a counter (every acknowledged increment counts once).";
    Incrby: "INCRBY", 3, ["write", "denyoom", "fast"], (1, 1, 1), "string", "Adds to a counter.";
    Decr: "DECR", 2, ["write", "denyoom", "fast"], (1, 1, 1), "string", "Subtracts 1 from a counter.";
    Decrby: "DECRBY", 3, ["write", "denyoom", "fast"], (1, 1, 1), "string", "Subtracts from a counter.";
    Sadd: "SADD", -3, ["write", "denyoom", "fast"], (1, 1, 1), "set",
        "Adds members to a set (an add wins over a concurrent remove).";
    Srem: "SREM", -3, ["write", "fast"], (1, 1, 1), "set", "Removes the members of a set it sees.";
    Smembers: "SMEMBERS", 2, ["readonly"], (1, 1, 1), "set", "Returns the members of a set.";
    Sismember: "SISMEMBER", 3, ["readonly", "fast"], (1, 1, 1), "set", "Says whether a member is in a set.";
    Smismember: "SMISMEMBER", -3, ["readonly", "fast"], (1, 1, 1), "set",
        "Says whether each member is in a set.";
    Scard: "SCARD", 2, ["readonly", "fast"], (1, 1, 1), "set", "Counts the members of a set.";
    Srandmember: "SRANDMEMBER", -2, ["readonly"], (1, 1, 1), "set", "Returns random members of a set.";
    Hset: "HSET", -4, ["write", "denyoom", "fast"], (1, 1, 1), "hash", "Sets fields of a hash.";
    Hmset: "HMSET", -4, ["write", "denyoom", "fast"], (1, 1, 1), "hash", "Sets fields of a hash (+OK).";
    Hsetnx: "HSETNX", 4, ["write", "denyoom", "fast"], (1, 1, 1), "hash",
        "Sets a field of a hash when the coordinator sees it absent.";
    Hget: "HGET", 3, ["readonly", "fast"], (1, 1, 1), "hash", "Returns a field of a hash.";
    Hmget: "HMGET", -3, ["readonly", "fast"], (1, 1, 1), "hash", "Returns fields of a hash.";
    Hdel: "HDEL", -3, ["write", "fast"], (1, 1, 1), "hash", "Removes the fields of a hash it sees.";
    Hgetall: "HGETALL", 2, ["readonly"], (1, 1, 1), "hash", "Returns every field of a hash and its value.";
    Hlen: "HLEN", 2, ["readonly", "fast"], (1, 1, 1), "hash", "Counts the fields of a hash.";
    Hexists: "HEXISTS", 3, ["readonly", "fast"], (1, 1, 1), "hash", "Says whether a field is in a hash.";
    Hkeys: "HKEYS", 2, ["readonly"], (1, 1, 1), "hash", "Returns the fields of a hash.";
    Hvals: "HVALS", 2, ["readonly"], (1, 1, 1), "hash", "Returns the values of a hash.";
    Hstrlen: "HSTRLEN", 3, ["readonly", "fast"], (1, 1, 1), "hash", "Returns the length of a field's value.";
    Hincrby: "HINCRBY", 4, ["write", "denyoom", "fast"], (1, 1, 1), "hash",
        "Adds to a field of a hash counted as a counter.";
}

impl Cmd {
    pub fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }

    /// Looks a command name up in any case.
    pub fn find(name: &[u8]) -> Option<Cmd> {
        const NAME_BYTES_MAX: usize = 24;
        if name.len() > NAME_BYTES_MAX {
            return None;
        }
        let mut upper = [0u8; NAME_BYTES_MAX];
        let upper = &mut upper[..name.len()];
        upper.copy_from_slice(name);
        upper.make_ascii_uppercase();
        Cmd::lookup(upper)
    }
}

/// The state of one client connection that commands read and change.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub protocol: Protocol,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// The connection's read level; `None` takes the node's default.
    pub read_level: Option<Consistency>,
    /// The connection's write level; `None` takes the node's default.
    pub write_level: Option<Consistency>,
    pub authenticated: bool,
    /// Who the connection acts as, once authenticated (everyone is the
    /// unrestricted `default` on a node without users).
    pub user: std::sync::Arc<ringkv_auth::User>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub opened: Instant,
    /// Set by QUIT: close once the reply is written.
    pub closing: bool,
    /// Set by a refused MULTI: commands are refused until EXEC or DISCARD.
    pub in_refused_transaction: bool,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, authenticated: bool) -> Self {
        Self {
            id,
            protocol: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            read_level: None,
            write_level: None,
            authenticated,
            user: ringkv_auth::User::unrestricted(),
            peer,
            local,
            opened: Instant::now(),
            closing: false,
            in_refused_transaction: false,
        }
    }

    pub(crate) fn read_options(&self) -> ReadOptions {
        ReadOptions {
            consistency: self.read_level,
        }
    }

    pub(crate) fn write_options(&self) -> WriteOptions {
        WriteOptions {
            consistency: self.write_level,
            ..WriteOptions::default()
        }
    }
}

/// Everything a command may touch.
pub struct Ctx<'a, K> {
    pub kv: &'a K,
    pub session: &'a mut Session,
    pub shared: &'a Shared,
}

/// The outcome of one request, for the connection's counters.
pub(crate) struct Outcome {
    pub reply: Frame,
    pub error: Option<&'static str>,
}

/// Runs `call` for every item, at most `fanout` at a time, and returns the
/// results in order; the first error wins. Multi-key commands use it so a
/// thousand keys never mean a thousand requests in flight.
pub(crate) async fn fan_out<'a, T, R, Fut>(
    items: &'a [T],
    fanout: usize,
    call: impl Fn(&'a T) -> Fut,
) -> Result<Vec<R>, CommandError>
where
    Fut: std::future::Future<Output = Result<R, ringkv_cluster::KvError>>,
{
    let mut out = Vec::with_capacity(items.len().min(1024));
    for chunk in items.chunks(fanout.max(1)) {
        for result in futures::future::join_all(chunk.iter().map(&call)).await {
            out.push(result?);
        }
    }
    Ok(out)
}

/// Runs one request (`args[0]` is the command name) and returns its reply.
pub(crate) async fn execute<K: Kv>(ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Outcome {
    let cmd = args.first().and_then(|name| Cmd::find(name));
    let result =
        if ctx.session.in_refused_transaction && !matches!(cmd, Some(Cmd::Quit | Cmd::Reset)) {
            close_refused_transaction(ctx.session, args)
        } else {
            match cmd {
                Some(cmd) => run(ctx, cmd, args).await,
                None => Err(match args.first() {
                    Some(name) => {
                        if unsupported::opens_transaction(name) {
                            ctx.session.in_refused_transaction = true;
                        }
                        unsupported::refusal(name)
                            .unwrap_or_else(|| CommandError::unknown_command(args))
                    }
                    None => CommandError::unknown_command(args),
                }),
            }
        };
    match result {
        Ok(reply) => Outcome { reply, error: None },
        Err(e) => Outcome {
            reply: e.to_frame(),
            error: Some(e.kind()),
        },
    }
}

/// The keys a request reads or writes, for the commands whose records a
/// pipeline prefetches ([`Kv::prefetch`]): the string reads and writes of
/// one key, and MGET, MSET, DEL, UNLINK and EXISTS. Any other request:
/// none (a hint only; nothing depends on it).
pub(crate) fn prefetched_keys(args: &[Bytes]) -> impl Iterator<Item = &[u8]> {
    const ONE_KEY: [&[u8]; 8] = [
        b"GET", b"SET", b"GETDEL", b"GETSET", b"SETNX", b"SETEX", b"PSETEX", b"STRLEN",
    ];
    const EVERY_ARG: [&[u8]; 4] = [b"MGET", b"DEL", b"UNLINK", b"EXISTS"];
    let is = |names: &[&[u8]]| {
        args.first()
            .is_some_and(|name| names.iter().any(|n| name.eq_ignore_ascii_case(n)))
    };
    // (first key, step between keys, how many)
    let (step, count) = if is(&ONE_KEY) {
        (1, 1)
    } else if is(&EVERY_ARG) {
        (1, args.len().saturating_sub(1))
    } else if is(&[b"MSET"]) {
        (2, args.len().saturating_sub(1) / 2)
    } else {
        (1, 0)
    };
    args.iter()
        .skip(1)
        .step_by(step)
        .take(count)
        .map(|k| &k[..])
}

/// Requests after which a connection's limits or identity may change
/// (authentication), so the requests behind them are parsed only once they
/// have run.
pub(crate) fn changes_session(args: &[Bytes]) -> bool {
    args.first().is_some_and(|name| {
        [&b"AUTH"[..], b"HELLO", b"RESET"]
            .iter()
            .any(|k| name.eq_ignore_ascii_case(k))
    })
}

/// Inside a refused MULTI: EXEC and DISCARD end it (EXEC with Redis'
/// EXECABORT, so clients report the transaction as not run; DISCARD with
/// `+OK`, nothing having run); anything else is refused.
fn close_refused_transaction(session: &mut Session, args: &[Bytes]) -> Result<Frame, CommandError> {
    let name = args.first().map_or(&b""[..], |n| &n[..]);
    if name.eq_ignore_ascii_case(b"EXEC") {
        session.in_refused_transaction = false;
        Err(CommandError::ExecAbort)
    } else if name.eq_ignore_ascii_case(b"DISCARD") {
        session.in_refused_transaction = false;
        Ok(Frame::ok())
    } else {
        Err(CommandError::InRefusedTransaction)
    }
}

/// Commands that need the admin role though Redis flags them only
/// `write` (so `COMMAND INFO` answers as Redis does): they empty the
/// whole cluster.
const ADMIN_WITHOUT_FLAG: [&str; 2] = ["FLUSHALL", "FLUSHDB"];

/// The user's roles against the command's flags (`readonly` needs read,
/// `write` needs write, `admin` needs admin; and [`ADMIN_WITHOUT_FLAG`]),
/// and its key patterns against the keys the command names.
fn check_permissions(
    user: &ringkv_auth::User,
    spec: &Spec,
    args: &[Bytes],
) -> Result<(), CommandError> {
    use ringkv_auth::Role;
    let needs = |flag: &str| spec.flags.contains(&flag);
    let denied = (needs("readonly") && !user.has(Role::Read))
        || (needs("write") && !user.has(Role::Write))
        || ((needs("admin") || ADMIN_WITHOUT_FLAG.contains(&spec.name)) && !user.has(Role::Admin));
    if denied {
        // Redis names a container command with its subcommand.
        let mut name = spec.name.to_ascii_lowercase();
        if matches!(spec.name, "CONFIG" | "CLIENT" | "COMMAND" | "ACL")
            && let Some(sub) = args.get(1)
        {
            name.push('|');
            name.push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
        }
        return Err(CommandError::NoPermCommand(name));
    }
    let (first, last, step) = spec.keys;
    if first > 0 && step > 0 {
        let last = if last < 0 {
            args.len() as i64 + last
        } else {
            last
        };
        let mut i = first;
        while i <= last {
            if let Some(key) = args.get(i as usize)
                && !user.may_access(key)
            {
                return Err(CommandError::NoPermKey);
            }
            i += step;
        }
    }
    Ok(())
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

async fn run<K: Kv>(ctx: &mut Ctx<'_, K>, cmd: Cmd, args: &[Bytes]) -> Result<Frame, CommandError> {
    if let Err(e) = admit(ctx, cmd, args) {
        ctx.shared.metrics.record_rejected(cmd);
        return Err(e);
    }
    let started = Instant::now();
    ringkv_cluster::slowlog::restart_trace();
    let result = dispatch(ctx, cmd, args).await;
    let elapsed = started.elapsed();
    let failed = match &result {
        Err(_) => true,
        Ok(frame) => matches!(frame, Frame::Error(_)),
    };
    ctx.shared.metrics.record(cmd, elapsed, failed);
    diag::note_command(ctx, cmd, args, elapsed);
    result
}

/// The checks before a command runs: arity, authentication, permissions.
fn admit<K: Kv>(ctx: &Ctx<'_, K>, cmd: Cmd, args: &[Bytes]) -> Result<(), CommandError> {
    let spec = cmd.spec();
    if !arity_ok(spec.arity, args.len()) {
        return Err(CommandError::WrongArity(spec.name.to_ascii_lowercase()));
    }
    if !ctx.session.authenticated && !spec.flags.contains(&"no-auth") {
        return Err(CommandError::NoAuth);
    }
    check_permissions(&ctx.session.user, spec, args)
}

async fn dispatch<K: Kv>(
    ctx: &mut Ctx<'_, K>,
    cmd: Cmd,
    args: &[Bytes],
) -> Result<Frame, CommandError> {
    let a = Args::new(args, 1);
    match cmd {
        Cmd::Get => get::Get::parse(a)?.apply(ctx).await,
        Cmd::Incr => types::Incr::parse(a, 1, false)?.apply(ctx).await,
        Cmd::Incrby => types::Incr::parse(a, 1, true)?.apply(ctx).await,
        Cmd::Decr => types::Incr::parse(a, -1, false)?.apply(ctx).await,
        Cmd::Decrby => types::Incr::parse(a, -1, true)?.apply(ctx).await,
        Cmd::Sadd => types::SetChange::parse(a, true)?.apply(ctx).await,
        Cmd::Srem => types::SetChange::parse(a, false)?.apply(ctx).await,
        Cmd::Smembers | Cmd::Sismember | Cmd::Smismember | Cmd::Scard | Cmd::Srandmember => {
            types::SetRead::parse(a, cmd.spec().name)?.apply(ctx).await
        }
        Cmd::Hset | Cmd::Hmset | Cmd::Hsetnx => {
            types::HashSet::parse(a, cmd.spec().name)?.apply(ctx).await
        }
        Cmd::Hdel => types::HashDelete::parse(a)?.apply(ctx).await,
        Cmd::Hincrby => types::HashIncr::parse(a)?.apply(ctx).await,
        Cmd::Hget
        | Cmd::Hmget
        | Cmd::Hgetall
        | Cmd::Hlen
        | Cmd::Hexists
        | Cmd::Hkeys
        | Cmd::Hvals
        | Cmd::Hstrlen => types::HashRead::parse(a, cmd.spec().name)?.apply(ctx).await,
        Cmd::Set => set::Set::parse(a)?.apply(ctx).await,
        Cmd::Ping => connection::ping(a),
        Cmd::Del | Cmd::Unlink => keys::Del::parse(a)?.apply(ctx).await,
        Cmd::Exists => keys::Exists::parse(a)?.apply(ctx).await,
        Cmd::Mget => get::Mget::parse(a)?.apply(ctx).await,
        Cmd::Mset => set::Mset::parse(a)?.apply(ctx).await,
        Cmd::Expire => {
            expire::Expire::parse(a, expire::Unit::RelativeSeconds)?
                .apply(ctx)
                .await
        }
        Cmd::Pexpire => {
            expire::Expire::parse(a, expire::Unit::RelativeMillis)?
                .apply(ctx)
                .await
        }
        Cmd::Expireat => {
            expire::Expire::parse(a, expire::Unit::AtSeconds)?
                .apply(ctx)
                .await
        }
        Cmd::Pexpireat => {
            expire::Expire::parse(a, expire::Unit::AtMillis)?
                .apply(ctx)
                .await
        }
        Cmd::Ttl => {
            expire::Ttl::parse(a, expire::TtlKind::Seconds)?
                .apply(ctx)
                .await
        }
        Cmd::Pttl => {
            expire::Ttl::parse(a, expire::TtlKind::Millis)?
                .apply(ctx)
                .await
        }
        Cmd::Expiretime => {
            expire::Ttl::parse(a, expire::TtlKind::AtSeconds)?
                .apply(ctx)
                .await
        }
        Cmd::Pexpiretime => {
            expire::Ttl::parse(a, expire::TtlKind::AtMillis)?
                .apply(ctx)
                .await
        }
        Cmd::Persist => expire::Persist::parse(a)?.apply(ctx).await,
        Cmd::Setnx => set::Set::parse_setnx(a)?.apply(ctx).await,
        Cmd::Setex => set::Set::parse_setex(a, 1000, "setex")?.apply(ctx).await,
        Cmd::Psetex => set::Set::parse_setex(a, 1, "psetex")?.apply(ctx).await,
        Cmd::Getset => set::Set::parse_getset(a)?.apply(ctx).await,
        Cmd::Getdel => get::Getdel::parse(a)?.apply(ctx).await,
        Cmd::Strlen => get::Strlen::parse(a)?.apply(ctx).await,
        Cmd::Type => keys::Type::parse(a)?.apply(ctx).await,
        Cmd::Dbsize => server::dbsize(ctx).await,
        Cmd::Flushall | Cmd::Flushdb => server::flushall(ctx, args).await,
        Cmd::Scan => scan::Scan::parse(a)?.apply(ctx).await,
        Cmd::Keys => scan::Keys::parse(a)?.apply(ctx).await,
        Cmd::Randomkey => scan::randomkey(ctx).await,
        Cmd::Info => server::info(ctx, a),
        Cmd::Config => server::config(ctx, args),
        Cmd::Time => server::time(ctx),
        Cmd::Command => command::command(ctx, args),
        Cmd::Client => client::client(ctx, args),
        Cmd::Echo => connection::echo(a),
        Cmd::Hello => connection::hello(ctx, a).await,
        Cmd::Auth => connection::auth(ctx, a).await,
        Cmd::Acl => connection::acl(ctx, a),
        Cmd::Select => connection::select(a),
        Cmd::Quit => connection::quit(ctx),
        Cmd::Reset => connection::reset(ctx),
        Cmd::Cluster => cluster::cluster(ctx, args),
        Cmd::Readonly | Cmd::Readwrite | Cmd::Asking => cluster::accepted(),
        Cmd::Slowlog => diag::slowlog(ctx, args),
        Cmd::Latency => diag::latency(ctx, args),
        Cmd::RingkvConsistency => ringkv::consistency(ctx, a),
        Cmd::RingkvGetall => ringkv::GetAll::parse(a)?.apply(ctx).await,
        Cmd::RingkvPut => ringkv::Put::parse(a)?.apply(ctx).await,
        Cmd::RingkvDel => ringkv::DelWithContext::parse(a)?.apply(ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_a_pipeline_prefetches() {
        let keys = |line: &str| {
            let args: Vec<Bytes> = line
                .split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect();
            prefetched_keys(&args)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(keys("get k"), "k");
        assert_eq!(keys("SET k v EX 10"), "k");
        assert_eq!(keys("mget a b c"), "a,b,c");
        assert_eq!(keys("EXISTS a b"), "a,b");
        assert_eq!(keys("MSET a 1 b 2"), "a,b");
        assert_eq!(
            keys("MSET a 1 b"),
            "a",
            "a key without its value is not a pair"
        );
        assert_eq!(keys("PING"), "");
        assert_eq!(keys("HGET h f"), "");
        assert_eq!(keys("GET"), "");
    }

    #[test]
    fn table_and_enum_agree() {
        assert_eq!(Cmd::find(b"get"), Some(Cmd::Get));
        assert_eq!(Cmd::find(b"RiNgKv.GeTaLl"), Some(Cmd::RingkvGetall));
        assert_eq!(Cmd::find(b"nope"), None);
        assert_eq!(Cmd::find(&[b'G'; 100]), None);
        for (i, spec) in SPECS.iter().enumerate() {
            let cmd = Cmd::find(spec.name.as_bytes()).expect("every spec is found");
            assert_eq!(cmd as usize, i, "{}", spec.name);
            assert!(spec.name.len() <= 24);
            assert!(spec.arity != 0);
        }
    }

    #[test]
    fn arity_rules() {
        assert!(arity_ok(2, 2) && !arity_ok(2, 3) && !arity_ok(2, 1));
        assert!(arity_ok(-2, 2) && arity_ok(-2, 9) && !arity_ok(-2, 1));
    }
}
