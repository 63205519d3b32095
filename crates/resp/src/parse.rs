//! A cursor over a command's arguments, with the conversions commands need.
//!
//! Commands read their arguments through [`Args`] so that every command
//! reports a missing, extra or malformed argument with the same Redis
//! wording. Arity is checked against the command table before a command
//! parses, so a missing argument here means a grammar error (`syntax error`).

use bytes::Bytes;

use crate::error::CommandError;
use crate::frame::parse_i64;

/// The arguments after the command name.
pub(crate) struct Args<'a> {
    args: &'a [Bytes],
    pos: usize,
}

impl<'a> Args<'a> {
    /// Wraps `args`, skipping `skip` leading ones (the command name, and the
    /// subcommand for container commands).
    pub(crate) fn new(args: &'a [Bytes], skip: usize) -> Self {
        Self {
            args,
            pos: skip.min(args.len()),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.args.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next argument, if any.
    pub(crate) fn next(&mut self) -> Option<&'a Bytes> {
        let arg = self.args.get(self.pos)?;
        self.pos += 1;
        Some(arg)
    }

    /// The next argument, which the grammar requires.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, CommandError> {
        self.next().cloned().ok_or(CommandError::Syntax)
    }

    /// The next argument as an integer.
    pub(crate) fn int(&mut self) -> Result<i64, CommandError> {
        let arg = self.next().ok_or(CommandError::Syntax)?;
        to_int(arg)
    }

    /// Every argument not read yet.
    pub(crate) fn rest(&mut self) -> &'a [Bytes] {
        let rest = &self.args[self.pos..];
        self.pos = self.args.len();
        rest
    }

    /// Fails when arguments are left over.
    pub(crate) fn finish(&self) -> Result<(), CommandError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(CommandError::Syntax)
        }
    }
}

/// An argument as an integer, with Redis' error.
pub(crate) fn to_int(arg: &[u8]) -> Result<i64, CommandError> {
    parse_i64(arg).ok_or(CommandError::NotInteger)
}

/// True when `arg` is the keyword `word` (ASCII, any case).
pub(crate) fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_in_order_and_reports_leftovers() {
        let raw = [
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k"),
            Bytes::from_static(b"12"),
            Bytes::from_static(b"x"),
        ];
        let mut args = Args::new(&raw, 1);
        assert_eq!(args.remaining(), 3);
        assert_eq!(args.bytes(), Ok(Bytes::from_static(b"k")));
        assert_eq!(args.int(), Ok(12));
        assert_eq!(args.finish(), Err(CommandError::Syntax));
        assert_eq!(args.int(), Err(CommandError::NotInteger));
        assert_eq!(args.bytes(), Err(CommandError::Syntax));
        assert_eq!(args.finish(), Ok(()));
        assert!(is(b"ex", "EX") && !is(b"exx", "EX"));
        // The whole range, as Redis reads it.
        assert_eq!(to_int(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(to_int(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(
            to_int(b"9223372036854775808"),
            Err(CommandError::NotInteger)
        );
        assert_eq!(
            to_int(b"-9223372036854775809"),
            Err(CommandError::NotInteger)
        );
    }
}
