//! The incremental request parser (see the grammar and limits in the
//! parent module).

use bytes::{Buf, Bytes, BytesMut};

use super::{HEADER_LINE_BYTES_MAX, Limits, ProtocolError};

/// Where the parser is inside a request that has not fully arrived. Offsets
/// are from the front of the buffer, which only grows at the back until the
/// request is taken, so they stay valid between calls and no byte is scanned
/// twice (except the few bytes of a header line).
#[derive(Debug, Clone, Copy)]
enum State {
    /// At the start of a request.
    Idle,
    /// Inside a multibulk of `args_total` elements; the next element header
    /// starts at `pos`. Completed elements are in `RequestParser::ranges`.
    Multibulk { args_total: usize, pos: usize },
    /// Inside an inline line; bytes before `scanned` hold no LF.
    Inline { scanned: usize },
}

/// An incremental parser of requests. One per connection: it remembers its
/// progress through a request that arrives over several reads.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    /// Byte ranges of the completed elements of the current multibulk.
    ranges: Vec<(usize, usize)>,
    /// How many more bytes the current element needs, when known.
    wanted: usize,
}

/// How many element ranges are kept allocated between requests.
const RANGES_RETAINED_MAX: usize = 1024;

impl RequestParser {
    /// Limits for the requests that start from now on (the connection
    /// authenticated, or was reset).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Idle,
            ranges: Vec::with_capacity(16),
            wanted: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when part of a request has been seen but not all of it.
    pub fn in_request(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// How many more bytes the request in progress needs at least, when the
    /// parser knows (a bulk string whose header has arrived); 0 otherwise.
    pub fn bytes_wanted(&self) -> usize {
        self.wanted
    }

    /// Takes the next complete request off the front of `buf` and puts its
    /// arguments, as zero-copy slices of the buffer, into `args` (cleared
    /// first). Returns `Ok(false)` when more bytes are needed; progress is
    /// kept for the next call, which must pass the same buffer with more
    /// bytes appended.
    ///
    /// After an error the parser and the buffer are in an unspecified state:
    /// the connection must be closed.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
    ) -> Result<bool, ProtocolError> {
        args.clear();
        self.wanted = 0;
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(false);
                    };
                    if first != b'*' {
                        self.state = State::Inline { scanned: 0 };
                        continue;
                    }
                    let Some((count, next)) = header_line(buf, 1)? else {
                        if buf.len() - 1 > HEADER_LINE_BYTES_MAX {
                            return Err(ProtocolError::MultibulkHeaderTooLong);
                        }
                        return Ok(false);
                    };
                    let count = parse_i64(count).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if count < -1 {
                        return Err(ProtocolError::InvalidMultibulkLength);
                    }
                    if count <= 0 {
                        // `*0` and `*-1` (the null array): an empty request,
                        // ignored as Redis does.
                        buf.advance(next);
                        continue;
                    }
                    if count as u64 > self.limits.args_max as u64 {
                        if self.limits.unauthenticated {
                            return Err(ProtocolError::UnauthenticatedMultibulk);
                        }
                        return Err(ProtocolError::TooManyArgs {
                            count: count as u64,
                            max: self.limits.args_max,
                        });
                    }
                    if self.ranges.capacity() > RANGES_RETAINED_MAX {
                        self.ranges = Vec::with_capacity(16);
                    }
                    self.ranges.clear();
                    self.state = State::Multibulk {
                        args_total: count as usize,
                        pos: next,
                    };
                }
                State::Multibulk { args_total, pos } => {
                    let end = match self.multibulk(buf, args_total, pos)? {
                        Some(end) => end,
                        None => return Ok(false),
                    };
                    let frame = buf.split_to(end).freeze();
                    args.extend(self.ranges.iter().map(|&(s, e)| frame.slice(s..e)));
                    self.ranges.clear();
                    self.state = State::Idle;
                    return Ok(true);
                }
                State::Inline { scanned } => {
                    let window_end = buf
                        .len()
                        .min(self.limits.inline_bytes_max.saturating_add(1));
                    let found = buf
                        .get(scanned..window_end)
                        .and_then(|w| w.iter().position(|&b| b == b'\n'));
                    let Some(offset) = found else {
                        if buf.len() > self.limits.inline_bytes_max {
                            return Err(ProtocolError::InlineTooLong);
                        }
                        self.state = State::Inline { scanned: buf.len() };
                        return Ok(false);
                    };
                    let lf = scanned + offset;
                    let frame = buf.split_to(lf + 1).freeze();
                    self.state = State::Idle;
                    let mut line_end = lf;
                    if line_end > 0 && frame[line_end - 1] == b'\r' {
                        line_end -= 1;
                    }
                    split_inline(&frame, line_end, self.limits.args_max, args)?;
                    if args.is_empty() {
                        continue;
                    }
                    return Ok(true);
                }
            }
        }
    }

    /// Reads the elements of a multibulk from `pos`; returns the end of the
    /// request once every element has arrived.
    fn multibulk(
        &mut self,
        buf: &BytesMut,
        args_total: usize,
        mut pos: usize,
    ) -> Result<Option<usize>, ProtocolError> {
        while self.ranges.len() < args_total {
            let Some(&kind) = buf.get(pos) else {
                self.state = State::Multibulk { args_total, pos };
                return Ok(None);
            };
            if kind != b'$' {
                return Err(ProtocolError::ExpectedBulk(char::from(kind)));
            }
            let Some((len, data_start)) = header_line(buf, pos + 1)? else {
                if buf.len() - pos - 1 > HEADER_LINE_BYTES_MAX {
                    return Err(ProtocolError::BulkHeaderTooLong);
                }
                self.state = State::Multibulk { args_total, pos };
                return Ok(None);
            };
            let len = parse_i64(len).ok_or(ProtocolError::InvalidBulkLength)?;
            if len < 0 {
                return Err(ProtocolError::InvalidBulkLength);
            }
            if len as u64 > self.limits.bulk_bytes_max as u64 {
                if self.limits.unauthenticated {
                    return Err(ProtocolError::UnauthenticatedBulk);
                }
                return Err(ProtocolError::BulkTooLarge {
                    len: len as u64,
                    max: self.limits.bulk_bytes_max,
                });
            }
            let data_end = data_start.saturating_add(len as usize);
            // Each remaining element needs at least `$0\r\n\r\n`.
            let remaining = args_total - self.ranges.len() - 1;
            let at_least = data_end
                .saturating_add(2)
                .saturating_add(remaining.saturating_mul(6));
            if at_least > self.limits.request_bytes_max {
                return Err(ProtocolError::RequestTooLarge {
                    max: self.limits.request_bytes_max,
                });
            }
            if buf.len() < data_end + 2 {
                self.wanted = data_end + 2 - buf.len();
                self.state = State::Multibulk { args_total, pos };
                return Ok(None);
            }
            if &buf[data_end..data_end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            self.ranges.push((data_start, data_end));
            pos = data_end + 2;
        }
        Ok(Some(pos))
    }
}

/// Finds the CRLF-terminated line starting at `start`, within
/// [`HEADER_LINE_BYTES_MAX`]. Returns the line and the offset after the CRLF.
fn header_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window_end = buf.len().min(start + HEADER_LINE_BYTES_MAX + 2);
    let Some(window) = buf.get(start..window_end) else {
        return Ok(None);
    };
    match window.iter().position(|&b| b == b'\r') {
        None => Ok(None),
        Some(i) => match window.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&window[..i], start + i + 2))),
            Some(_) => Err(ProtocolError::Invalid("line ending")),
        },
    }
}

/// Parses a strict decimal i64: an optional `-`, then 1 to 19 digits.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // Accumulated with the sign, so that i64::MIN reads too.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(d)?
        } else {
            value.checked_add(d)?
        };
    }
    Some(value)
}

/// Splits an inline line (`frame[..line_end]`) into arguments the way
/// redis-cli and telnet users expect (`sdssplitargs` in Redis). Unquoted words
/// are zero-copy slices; quoted ones are unescaped into new buffers.
fn split_inline(
    frame: &Bytes,
    line_end: usize,
    args_max: usize,
    args: &mut Vec<Bytes>,
) -> Result<(), ProtocolError> {
    let line = &frame[..line_end];
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        if args.len() >= args_max {
            return Err(ProtocolError::TooManyArgs {
                count: args.len() as u64 + 1,
                max: args_max,
            });
        }
        match line[i] {
            quote @ (b'"' | b'\'') => {
                let mut word = Vec::new();
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    if c == quote {
                        i += 1;
                        // A closing quote must end the word.
                        if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        break;
                    }
                    if c == b'\\' && quote == b'"' {
                        match line.get(i + 1) {
                            Some(b'x')
                                if i + 3 < line.len()
                                    && hex(line[i + 2]).is_some()
                                    && hex(line[i + 3]).is_some() =>
                            {
                                let hi = hex(line[i + 2]).unwrap_or(0);
                                let lo = hex(line[i + 3]).unwrap_or(0);
                                word.push(hi << 4 | lo);
                                i += 4;
                            }
                            Some(&e) => {
                                word.push(match e {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 0x08,
                                    b'a' => 0x07,
                                    other => other,
                                });
                                i += 2;
                            }
                            None => return Err(ProtocolError::UnbalancedQuotes),
                        }
                    } else if c == b'\\' && quote == b'\'' && line.get(i + 1) == Some(&b'\'') {
                        word.push(b'\'');
                        i += 2;
                    } else {
                        word.push(c);
                        i += 1;
                    }
                }
                args.push(Bytes::from(word));
            }
            _ => {
                let start = i;
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    i += 1;
                }
                args.push(frame.slice(start..i));
            }
        }
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
