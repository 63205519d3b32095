//! Redis commands ringkv refuses, each with the reason, so a client gets an
//! honest error instead of `unknown command` or, worse, a wrong answer.
//!
//! The main family is read-modify-write: APPEND, list pushes and the
//! like must read a value, change it and write it back as one atomic step
//! (counters, sets and hashes are convergent data types instead, see
//! [`super::types`]).
//! ringkv is leaderless: replicas accept writes independently and concurrent
//! writes become siblings, so no node can make such a step atomic. Clients
//! read (with `RINGKV.GETALL`), compute, and write with the causal context
//! (`RINGKV.PUT ... CONTEXT`), resolving any siblings themselves. The other
//! families need features ringkv does not have (transactions, scripts, key
//! scans, databases other than 0).

use crate::error::CommandError;

const RMW: &str = "ringkv is leaderless and cannot do an atomic read-modify-write across \
                   replicas; read with RINGKV.GETALL, compute, and write with RINGKV.PUT ... \
                   CONTEXT instead";
const TYPES: &str = "ringkv has strings, counters, sets and hashes; this type needs an atomic \
                     read-modify-write across replicas, which a leaderless store cannot do";
const FLOAT: &str = "a float counter cannot be exact under merges (addition of floats does \
                     not commute bit for bit); use INCRBY with integers";
const POP: &str = "two partitioned replicas would each pop a member and both report it; \
                   use SRANDMEMBER, then SREM";
const MULTI_KEY: &str = "ringkv has no atomicity across keys; write the keys one by one";
const SCRIPTS: &str = "ringkv runs no server-side scripts or transactions; keys are independent";
const TRANSACTION: &str = "ringkv has no transactions across keys; the commands up to EXEC or \
                           DISCARD are refused too. Send them as a plain pipeline instead \
                           (redis-py: pipeline(transaction=False))";
const PUBSUB: &str = "ringkv is a key-value store without messaging";

/// Every refused command and why. Names are upper case.
const REFUSED: &[(&str, &str)] = &[
    ("INCRBYFLOAT", FLOAT),
    ("APPEND", RMW),
    ("SETRANGE", RMW),
    ("SETBIT", RMW),
    ("BITFIELD", RMW),
    ("BITOP", RMW),
    ("GETEX", RMW),
    ("LPUSH", TYPES),
    ("RPUSH", TYPES),
    ("LPUSHX", TYPES),
    ("RPUSHX", TYPES),
    ("LPOP", TYPES),
    ("RPOP", TYPES),
    ("LSET", TYPES),
    ("LINSERT", TYPES),
    ("LREM", TYPES),
    ("LTRIM", TYPES),
    ("LMOVE", TYPES),
    ("RPOPLPUSH", TYPES),
    ("LRANGE", TYPES),
    ("LLEN", TYPES),
    ("SPOP", POP),
    ("SMOVE", TYPES),
    ("HINCRBYFLOAT", FLOAT),
    ("ZADD", TYPES),
    ("ZINCRBY", TYPES),
    ("ZREM", TYPES),
    ("ZRANGE", TYPES),
    ("ZPOPMIN", TYPES),
    ("ZPOPMAX", TYPES),
    ("PFADD", TYPES),
    ("PFMERGE", TYPES),
    ("GEOADD", TYPES),
    ("XADD", TYPES),
    ("MSETNX", MULTI_KEY),
    ("RENAME", MULTI_KEY),
    ("RENAMENX", MULTI_KEY),
    ("COPY", MULTI_KEY),
    ("MOVE", MULTI_KEY),
    ("MULTI", TRANSACTION),
    ("EXEC", SCRIPTS),
    ("DISCARD", SCRIPTS),
    ("WATCH", SCRIPTS),
    ("UNWATCH", SCRIPTS),
    ("EVAL", SCRIPTS),
    ("EVALSHA", SCRIPTS),
    ("EVAL_RO", SCRIPTS),
    ("FCALL", SCRIPTS),
    ("SCRIPT", SCRIPTS),
    ("FUNCTION", SCRIPTS),
    ("SUBSCRIBE", PUBSUB),
    ("PSUBSCRIBE", PUBSUB),
    ("PUBLISH", PUBSUB),
];

/// True for `MULTI`: after it, the connection refuses every command until
/// `EXEC` or `DISCARD`, so a client that did not notice the refusal cannot
/// have half of its transaction applied.
pub(crate) fn opens_transaction(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"MULTI")
}

/// The refusal for `name`, when it is a command ringkv refuses.
pub(crate) fn refusal(name: &[u8]) -> Option<CommandError> {
    REFUSED
        .iter()
        .find(|(refused, _)| name.eq_ignore_ascii_case(refused.as_bytes()))
        .map(|&(refused, why)| CommandError::Unsupported {
            command: refused.to_string(),
            why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_explain_why() {
        let e = refusal(b"append").expect("refused");
        assert_eq!(
            e.to_string(),
            "ERR APPEND is not supported: ringkv is leaderless and cannot do an atomic \
             read-modify-write across replicas; read with RINGKV.GETALL, compute, and write \
             with RINGKV.PUT ... CONTEXT instead"
        );
        assert!(refusal(b"GET").is_none());
        assert!(refusal(b"incr").is_none(), "a counter");
        assert!(refusal(b"lpush").is_some());
        assert!(refusal(b"incrbyfloat").is_some_and(|e| e.to_string().contains("float")));
        assert!(refusal(b"spop").is_some_and(|e| e.to_string().contains("SRANDMEMBER")));
    }

    #[test]
    fn refused_names_are_upper_case_and_not_supported_commands() {
        for (name, _) in REFUSED {
            assert_eq!(*name, name.to_ascii_uppercase());
            assert!(crate::cmd::Cmd::find(name.as_bytes()).is_none(), "{name}");
        }
    }
}
