//! RESP frames: the incremental request parser and the reply encoder.
//!
//! This module owns the bytes of the Redis protocol and nothing else: it does
//! no I/O and knows no command. [`RequestParser`] turns the front of a
//! connection's input buffer into the arguments of one command; [`Frame`] is a
//! reply, written with [`Frame::encode`] in RESP2 or RESP3.
//! [`parse_frame`] reads any RESP2/RESP3 value (replies included); the server
//! never calls it, tests and clients do.
//!
//! # Request grammar
//!
//! ```text
//! request    := multibulk | inline
//! multibulk  := '*' count CRLF element{count}       count: decimal, 1..=args_max
//! element    := '$' len CRLF byte{len} CRLF          len: decimal, 0..=bulk_bytes_max
//! inline     := line LF                               line: not starting with '*',
//!                                                     at most inline_bytes_max bytes,
//!                                                     an optional CR before LF is dropped
//! line       := ws* (arg ws+)* arg? ws*
//! arg        := '"' (char | '\' escape)* '"'          \n \r \t \b \a \\ \" \xHH
//!             | '\'' (char | "\'")* '\''
//!             | non-ws-byte+
//! ```
//!
//! `*0`, `*-1` and blank inline lines are empty requests (a count below -1
//! is an error): they are consumed and
//! answered with nothing, as Redis does. Requests are flat: an element that is
//! not a bulk string (a nested array, say) is a protocol error, so request
//! nesting is limited to one level by the grammar itself. Clients of RESP3
//! send their commands in this same RESP2 form.
//!
//! # Limits
//!
//! Every limit is checked from the headers, before the bytes it announces are
//! awaited or any memory is reserved for them:
//! - `bulk_bytes_max`: the largest bulk string; a larger or negative length is
//!   refused as soon as its header line is read.
//! - `args_max`: the most elements of one multibulk (or words of one inline
//!   request); checked against the announced count.
//! - `inline_bytes_max`: the longest inline line; a line with no LF past it is
//!   refused without waiting for the rest.
//! - `request_bytes_max`: the largest whole request; a request whose announced
//!   lengths add up past it is refused before its data arrives.
//! - [`HEADER_LINE_BYTES_MAX`]: a `*count` or `$len` line longer than this is
//!   refused (a 64-bit length never needs more).
//! - `nesting_depth_max` (replies only, [`parse_frame`]): the deepest nesting
//!   of aggregates.
//!
//! A request that breaks a limit cannot be skipped reliably (its length is
//! unknown or not worth waiting for), so the server answers the error and
//! closes the connection.
//!
//! # Reply encoding
//!
//! | Frame      | RESP3                    | RESP2                         |
//! |------------|--------------------------|-------------------------------|
//! | Simple     | `+text`                  | same                          |
//! | Error      | `-CODE text`             | same                          |
//! | Integer    | `:n`                     | same                          |
//! | Bulk       | `$len CRLF bytes`        | same                          |
//! | Null       | `_`                      | `$-1`                         |
//! | Array      | `*n`                     | same                          |
//! | Map        | `%n` then n key/value    | `*2n` (flattened)             |
//! | Set        | `~n`                     | `*n`                          |
//! | Double     | `,1.5` (`inf`, `-inf`, `nan`) | bulk string of the same text |
//! | Boolean    | `#t` / `#f`              | `:1` / `:0`                   |
//! | Verbatim   | `=len CRLF fmt:text`     | bulk string of the text       |
//!
//! Simple strings and errors never carry CR or LF: the encoder replaces them
//! with spaces so a reply can never break the framing.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The longest `*count` / `$len` header line accepted, in bytes (excluding
/// CRLF). A signed 64-bit number needs at most 20.
pub const HEADER_LINE_BYTES_MAX: usize = 32;

/// The limits the parser enforces. The server builds these from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes.
    pub bulk_bytes_max: usize,
    /// Most arguments of one request (the command name included).
    pub args_max: usize,
    /// Longest inline request line, in bytes.
    pub inline_bytes_max: usize,
    /// Largest whole request, in bytes (headers and CRLFs included).
    pub request_bytes_max: usize,
    /// Deepest nesting of aggregate replies accepted by [`parse_frame`].
    pub nesting_depth_max: usize,
    /// The limits of a connection that has not authenticated: past them
    /// the errors are Redis' `unauthenticated multibulk length` and
    /// `unauthenticated bulk length`.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bulk_bytes_max: 8 * 1024 * 1024,
            args_max: 1024 * 1024,
            inline_bytes_max: 64 * 1024,
            request_bytes_max: 64 * 1024 * 1024,
            nesting_depth_max: 32,
            unauthenticated: false,
        }
    }
}

/// Why the bytes at the front of a buffer are not RESP. The text follows
/// Redis' own wording where Redis has one; the server prefixes it with
/// `ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("too big mbulk count string")]
    MultibulkHeaderTooLong,
    #[error("too big bulk count string")]
    BulkHeaderTooLong,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("too big inline request")]
    InlineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
    #[error("too many arguments: {count}, the limit is {max}")]
    TooManyArgs { count: u64, max: usize },
    #[error("bulk length {len} exceeds the limit of {max} bytes")]
    BulkTooLarge { len: u64, max: usize },
    #[error("request exceeds the limit of {max} bytes")]
    RequestTooLarge { max: usize },
    #[error("replies nested deeper than {max}")]
    TooDeep { max: usize },
    #[error("unknown type byte '{0}'")]
    UnknownType(char),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulk,
}

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
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
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

/// The protocol a connection speaks: chosen by `HELLO`, RESP2 until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// A RESP value: what commands answer, and what [`parse_frame`] reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    Null,
    Array(Vec<Frame>),
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    Double(f64),
    Boolean(bool),
    Verbatim { format: [u8; 3], text: Bytes },
}

impl Frame {
    /// `+OK`.
    pub const fn ok() -> Self {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    pub const fn simple_static(text: &'static str) -> Self {
        Frame::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// An error reply; `text` starts with its code (`ERR ...`).
    pub fn error(text: impl Into<String>) -> Self {
        Frame::Error(Bytes::from(text.into()))
    }

    pub fn bulk_static(text: &'static str) -> Self {
        Frame::Bulk(Bytes::from_static(text.as_bytes()))
    }

    pub fn bulk_string(text: impl Into<String>) -> Self {
        Frame::Bulk(Bytes::from(text.into()))
    }

    /// A bulk string, or null when absent.
    pub fn bulk_or_null(value: Option<Bytes>) -> Self {
        value.map_or(Frame::Null, Frame::Bulk)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// Appends the encoding of this frame to `out`.
    pub fn encode(&self, out: &mut BytesMut, protocol: Protocol) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Frame::Simple(text) => line(out, b'+', text),
            Frame::Error(text) => line(out, b'-', text),
            Frame::Integer(n) => {
                out.put_u8(b':');
                put_i64(out, *n);
                out.put_slice(b"\r\n");
            }
            Frame::Bulk(data) => put_bulk(out, data),
            Frame::Null if resp3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::Array(items) => {
                header(out, b'*', items.len());
                for item in items {
                    item.encode(out, protocol);
                }
            }
            Frame::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len());
                for item in items {
                    item.encode(out, protocol);
                }
            }
            Frame::Map(pairs) => {
                if resp3 {
                    header(out, b'%', pairs.len());
                } else {
                    header(out, b'*', pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(out, protocol);
                    v.encode(out, protocol);
                }
            }
            Frame::Double(d) => {
                let text = format_double(*d);
                if resp3 {
                    out.put_u8(b',');
                    out.put_slice(text.as_bytes());
                    out.put_slice(b"\r\n");
                } else {
                    put_bulk(out, text.as_bytes());
                }
            }
            Frame::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Boolean(b) => out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
            Frame::Verbatim { format, text } if resp3 => {
                header(out, b'=', text.len() + 4);
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim { text, .. } => put_bulk(out, text),
        }
    }

    /// The encoding of this frame as a new buffer (tests, logs).
    pub fn to_bytes(&self, protocol: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out, protocol);
        out.freeze()
    }

    /// What a RESP2 client reads back when this frame is sent in RESP2:
    /// maps flattened, sets as arrays, doubles as bulk strings, booleans as
    /// integers, verbatim strings as bulk strings.
    pub fn to_resp2(&self) -> Frame {
        match self {
            Frame::Array(items) | Frame::Set(items) => {
                Frame::Array(items.iter().map(Frame::to_resp2).collect())
            }
            Frame::Map(pairs) => Frame::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()])
                    .collect(),
            ),
            Frame::Double(d) => Frame::Bulk(Bytes::from(format_double(*d))),
            Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
            Frame::Verbatim { text, .. } => Frame::Bulk(text.clone()),
            other => other.clone(),
        }
    }
}

/// Doubles as Redis prints them: `inf`, `-inf`, `nan`, else the shortest text
/// that reads back as the same number.
fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{d:?}")
    }
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.put_u8(kind);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.put_slice(text);
    }
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, len: usize) {
    out.put_u8(kind);
    put_u64(out, len as u64);
    out.put_slice(b"\r\n");
}

/// Appends a bulk string: `$len CRLF data CRLF`.
pub fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    header(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends the decimal text of `n` without allocating.
pub fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Appends the decimal text of `n` without allocating.
pub fn put_i64(out: &mut BytesMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, n.unsigned_abs());
}

/// Encodes a request the way clients send it: an array of bulk strings.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    header(out, b'*', args.len());
    for arg in args {
        put_bulk(out, arg.as_ref());
    }
}

/// Reads one whole RESP2/RESP3 value off the front of `buf`, or `Ok(None)`
/// when it has not fully arrived (nothing is consumed then). Bulk strings are
/// zero-copy slices of the buffer. This reader re-scans a partial value on
/// every call, so it is for replies and tests, not for the server's requests.
pub fn parse_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let Some(end) = scan(buf, 0, 0, limits)? else {
        return Ok(None);
    };
    let src = buf.split_to(end).freeze();
    let (frame, used) = build(&src, 0)?;
    debug_assert_eq!(used, end, "scan and build agree on the frame's length");
    Ok(Some(frame))
}

/// A CRLF-terminated line of any length starting at `start`.
fn any_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let Some(rest) = buf.get(start..) else {
        return Ok(None);
    };
    match rest.iter().position(|&b| b == b'\r') {
        None => Ok(None),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..i], start + i + 2))),
            Some(_) => Err(ProtocolError::Invalid("line ending")),
        },
    }
}

/// Validates the value at `pos` and returns where it ends, without
/// allocating.
fn scan(
    buf: &[u8],
    pos: usize,
    depth: usize,
    limits: &Limits,
) -> Result<Option<usize>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((text, next)) = any_line(buf, pos + 1)? else {
        return Ok(None);
    };
    let count = |text: &[u8], what| -> Result<i64, ProtocolError> {
        let n = parse_i64(text).ok_or(ProtocolError::Invalid(what))?;
        if n < -1 || (n == -1 && !matches!(kind, b'$' | b'*')) {
            return Err(ProtocolError::Invalid(what));
        }
        Ok(n)
    };
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => {
            parse_i64(text).ok_or(ProtocolError::Invalid("integer"))?;
            Ok(Some(next))
        }
        b'_' if text.is_empty() => Ok(Some(next)),
        b'#' if text == b"t" || text == b"f" => Ok(Some(next)),
        b',' => {
            parse_double(text)?;
            Ok(Some(next))
        }
        b'$' | b'=' => {
            let len = count(text, "bulk length")?;
            if len == -1 {
                return Ok(Some(next));
            }
            if len as u64 > limits.bulk_bytes_max as u64 {
                return Err(ProtocolError::BulkTooLarge {
                    len: len as u64,
                    max: limits.bulk_bytes_max,
                });
            }
            let end = next.saturating_add(len as usize);
            if kind == b'=' && (len < 4 || buf.get(next + 3).is_some_and(|&c| c != b':')) {
                return Err(ProtocolError::Invalid("verbatim string"));
            }
            if buf.len() < end.saturating_add(2) {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            Ok(Some(end + 2))
        }
        b'*' | b'~' | b'%' => {
            let n = count(text, "aggregate length")?;
            if n == -1 {
                return Ok(Some(next));
            }
            if depth >= limits.nesting_depth_max {
                return Err(ProtocolError::TooDeep {
                    max: limits.nesting_depth_max,
                });
            }
            let elements = if kind == b'%' { n.saturating_mul(2) } else { n };
            if elements as u64 > limits.args_max as u64 {
                return Err(ProtocolError::TooManyArgs {
                    count: elements as u64,
                    max: limits.args_max,
                });
            }
            let mut at = next;
            for _ in 0..elements {
                match scan(buf, at, depth + 1, limits)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(ProtocolError::UnknownType(char::from(other))),
    }
}

fn parse_double(text: &[u8]) -> Result<f64, ProtocolError> {
    let invalid = ProtocolError::Invalid("double");
    let text = std::str::from_utf8(text).map_err(|_| invalid.clone())?;
    match text {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        t if t
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c))
            && !t.is_empty() =>
        {
            t.parse().map_err(|_| invalid)
        }
        _ => Err(invalid),
    }
}

/// Builds the value at `pos` of a buffer that [`scan`] accepted.
fn build(src: &Bytes, pos: usize) -> Result<(Frame, usize), ProtocolError> {
    let truncated = ProtocolError::Invalid("truncated frame");
    let kind = *src.get(pos).ok_or(truncated.clone())?;
    let (text, next) = any_line(src, pos + 1)?.ok_or(truncated.clone())?;
    let text_range = pos + 1..next - 2;
    Ok(match kind {
        b'+' => (Frame::Simple(src.slice(text_range)), next),
        b'-' => (Frame::Error(src.slice(text_range)), next),
        b':' => (
            Frame::Integer(parse_i64(text).ok_or(ProtocolError::Invalid("integer"))?),
            next,
        ),
        b'_' => (Frame::Null, next),
        b'#' => (Frame::Boolean(text == b"t"), next),
        b',' => (Frame::Double(parse_double(text)?), next),
        b'$' | b'=' => {
            let len = parse_i64(text).ok_or(ProtocolError::Invalid("bulk length"))?;
            if len < 0 {
                return Ok((Frame::Null, next));
            }
            let end = next + len as usize;
            if end + 2 > src.len() {
                return Err(truncated);
            }
            if kind == b'$' {
                (Frame::Bulk(src.slice(next..end)), end + 2)
            } else {
                let mut format = [0u8; 3];
                format.copy_from_slice(src.get(next..next + 3).ok_or(truncated)?);
                (
                    Frame::Verbatim {
                        format,
                        text: src.slice(next + 4..end),
                    },
                    end + 2,
                )
            }
        }
        b'*' | b'~' | b'%' => {
            let n = parse_i64(text).ok_or(ProtocolError::Invalid("aggregate length"))?;
            if n < 0 {
                return Ok((Frame::Null, next));
            }
            let n = n as usize;
            let mut at = next;
            if kind == b'%' {
                let mut pairs = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let (k, after_k) = build(src, at)?;
                    let (v, after_v) = build(src, after_k)?;
                    pairs.push((k, v));
                    at = after_v;
                }
                (Frame::Map(pairs), at)
            } else {
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let (item, after) = build(src, at)?;
                    items.push(item);
                    at = after;
                }
                if kind == b'~' {
                    (Frame::Set(items), at)
                } else {
                    (Frame::Array(items), at)
                }
            }
        }
        other => return Err(ProtocolError::UnknownType(char::from(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            bulk_bytes_max: 1024,
            args_max: 8,
            inline_bytes_max: 64,
            request_bytes_max: 4096,
            nesting_depth_max: 4,
            unauthenticated: false,
        }
    }

    /// Parses every request in `input`, fed whole.
    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut parser = RequestParser::new(limits());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let mut args = Vec::new();
        while parser.parse(&mut buf, &mut args)? {
            out.push(std::mem::take(&mut args));
        }
        Ok(out)
    }

    fn strs(reqs: &[Vec<Bytes>]) -> Vec<Vec<String>> {
        reqs.iter()
            .map(|r| {
                r.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn multibulk_and_pipelined_requests() {
        let reqs =
            parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n")
                .expect("valid");
        assert_eq!(strs(&reqs), vec![vec!["GET", "k"], vec!["SET", "k", ""]]);
    }

    #[test]
    fn binary_bulk_with_crlf_inside() {
        let reqs = parse_all(b"*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\x00\xff\r\n").expect("valid");
        assert_eq!(reqs[0][1].as_ref(), b"\r\n\x00\xff");
    }

    #[test]
    fn empty_requests_are_skipped() {
        let reqs = parse_all(b"*0\r\n*-1\r\n\r\n   \r\n*1\r\n$4\r\nPING\r\n").expect("valid");
        assert_eq!(strs(&reqs), vec![vec!["PING"]]);
    }

    #[test]
    fn inline_requests_with_quotes() {
        let reqs =
            parse_all(b"PING\r\nset  k \"a b\\n\\x41\"\nGET 'it\\'s'\r\nECHO \"\"\r\nx\"y\" z\r\n")
                .expect("valid");
        assert_eq!(
            strs(&reqs),
            vec![
                vec!["PING"],
                vec!["set", "k", "a b\nA"],
                vec!["GET", "it's"],
                vec!["ECHO", ""],
                vec!["x\"y\"", "z"],
            ]
        );
    }

    #[test]
    fn inline_errors() {
        assert_eq!(
            parse_all(b"ECHO \"abc\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"ECHO \"abc\"def\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"a b c d e f g h i\r\n"),
            Err(ProtocolError::TooManyArgs { count: 9, max: 8 })
        );
        // No LF within the limit: refused without waiting for the rest.
        assert_eq!(parse_all(&[b'a'; 65]), Err(ProtocolError::InlineTooLong));
        assert_eq!(parse_all(&[b'a'; 64]), Ok(vec![]));
        let mut long = vec![b'a'; 70];
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&long), Err(ProtocolError::InlineTooLong));
    }

    #[test]
    fn multibulk_limits_and_malformed_headers() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", InvalidMultibulkLength),
            (b"*1x\r\n", InvalidMultibulkLength),
            (b"*99999999999999999999\r\n", InvalidMultibulkLength),
            (b"*-2\r\n", InvalidMultibulkLength),
            (b"*9\r\n", TooManyArgs { count: 9, max: 8 }),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$-5\r\n", InvalidBulkLength),
            (b"*1\r\n$abc\r\n", InvalidBulkLength),
            (
                b"*1\r\n$1025\r\n",
                BulkTooLarge {
                    len: 1025,
                    max: 1024,
                },
            ),
            (
                b"*1\r\n$9223372036854775807\r\n",
                BulkTooLarge {
                    len: 9223372036854775807,
                    max: 1024,
                },
            ),
            (b"*1\r\n:1\r\n", ExpectedBulk(':')),
            (b"*1\r\n*1\r\n$1\r\na\r\n", ExpectedBulk('*')),
            (b"*1\r\n$1\r\nabc\r\n", MissingCrlf),
            (b"*1\r\n$1\r\x00", Invalid("line ending")),
            (
                b"*11111111111111111111111111111111111",
                MultibulkHeaderTooLong,
            ),
            (
                b"*1\r\n$11111111111111111111111111111111111",
                BulkHeaderTooLong,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_all(input).as_ref(),
                Err(want),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn request_size_limit_counts_every_element() {
        // Four 1000-byte elements fit; a fifth announced one does not.
        let mut req = BytesMut::new();
        let big = vec![b'v'; 1000];
        encode_request(&[&big[..], &big, &big, &big], &mut req);
        assert_eq!(parse_all(&req).map(|r| r.len()), Ok(1));
        let mut req = BytesMut::new();
        encode_request(&[&big[..], &big, &big, &big, &big], &mut req);
        assert_eq!(
            parse_all(&req),
            Err(ProtocolError::RequestTooLarge { max: 4096 })
        );
    }

    #[test]
    fn every_split_point_gives_the_same_requests() {
        let input: &[u8] =
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\nPING x\r\n*1\r\n$4\r\nQUIT\r\n";
        let whole = parse_all(input).expect("valid");
        assert_eq!(whole.len(), 3);
        for split in 0..=input.len() {
            let mut parser = RequestParser::new(limits());
            let mut buf = BytesMut::from(&input[..split]);
            let mut got = Vec::new();
            let mut args = Vec::new();
            while parser.parse(&mut buf, &mut args).expect("valid prefix") {
                got.push(std::mem::take(&mut args));
            }
            buf.extend_from_slice(&input[split..]);
            while parser.parse(&mut buf, &mut args).expect("valid rest") {
                got.push(std::mem::take(&mut args));
            }
            assert_eq!(got, whole, "split at {split}");
            assert!(buf.is_empty());
            assert!(!parser.in_request());
        }
    }

    #[test]
    fn byte_by_byte_reports_wanted_bytes() {
        let mut parser = RequestParser::new(limits());
        let mut buf = BytesMut::from(&b"*1\r\n$10\r\n0123"[..]);
        let mut args = Vec::new();
        assert_eq!(parser.parse(&mut buf, &mut args), Ok(false));
        assert!(parser.in_request());
        assert_eq!(parser.bytes_wanted(), 8);
        buf.extend_from_slice(b"456789\r\n");
        assert_eq!(parser.parse(&mut buf, &mut args), Ok(true));
        assert_eq!(args, vec![Bytes::from_static(b"0123456789")]);
        assert_eq!(parser.bytes_wanted(), 0);
    }

    #[test]
    fn encodes_every_type_in_both_protocols() {
        use Protocol::*;
        let cases: Vec<(Frame, &[u8], &[u8])> = vec![
            (Frame::ok(), b"+OK\r\n", b"+OK\r\n"),
            (
                Frame::error("ERR bad\r\nthing"),
                b"-ERR bad  thing\r\n",
                b"-ERR bad  thing\r\n",
            ),
            (Frame::Integer(-42), b":-42\r\n", b":-42\r\n"),
            (
                Frame::Integer(i64::MIN),
                b":-9223372036854775808\r\n",
                b":-9223372036854775808\r\n",
            ),
            (Frame::bulk_static("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
            (Frame::Bulk(Bytes::new()), b"$0\r\n\r\n", b"$0\r\n\r\n"),
            (Frame::Null, b"$-1\r\n", b"_\r\n"),
            (
                Frame::Array(vec![Frame::Integer(1), Frame::Null]),
                b"*2\r\n:1\r\n$-1\r\n",
                b"*2\r\n:1\r\n_\r\n",
            ),
            (Frame::Array(vec![]), b"*0\r\n", b"*0\r\n"),
            (
                Frame::Map(vec![(Frame::bulk_static("a"), Frame::Integer(1))]),
                b"*2\r\n$1\r\na\r\n:1\r\n",
                b"%1\r\n$1\r\na\r\n:1\r\n",
            ),
            (
                Frame::Set(vec![Frame::Integer(7)]),
                b"*1\r\n:7\r\n",
                b"~1\r\n:7\r\n",
            ),
            (Frame::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
            (Frame::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
            (Frame::Boolean(true), b":1\r\n", b"#t\r\n"),
            (Frame::Boolean(false), b":0\r\n", b"#f\r\n"),
            (
                Frame::Verbatim {
                    format: *b"txt",
                    text: Bytes::from_static(b"ab"),
                },
                b"$2\r\nab\r\n",
                b"=6\r\ntxt:ab\r\n",
            ),
        ];
        for (frame, resp2, resp3) in cases {
            assert_eq!(frame.to_bytes(Resp2).as_ref(), resp2, "{frame:?} in RESP2");
            assert_eq!(frame.to_bytes(Resp3).as_ref(), resp3, "{frame:?} in RESP3");
        }
    }

    #[test]
    fn parse_frame_reads_every_type_and_waits_for_partial_input() {
        let input: &[u8] = b"%2\r\n+a\r\n*3\r\n:1\r\n$-1\r\n_\r\n$1\r\nb\r\n~2\r\n#t\r\n,-2.5\r\n";
        for split in 0..input.len() {
            let mut buf = BytesMut::from(&input[..split]);
            assert_eq!(parse_frame(&mut buf, &limits()), Ok(None), "split {split}");
            assert_eq!(buf.len(), split, "nothing consumed");
        }
        let mut buf = BytesMut::from(input);
        let frame = parse_frame(&mut buf, &limits())
            .expect("valid")
            .expect("whole");
        assert_eq!(
            frame,
            Frame::Map(vec![
                (
                    Frame::simple_static("a"),
                    Frame::Array(vec![Frame::Integer(1), Frame::Null, Frame::Null])
                ),
                (
                    Frame::bulk_static("b"),
                    Frame::Set(vec![Frame::Boolean(true), Frame::Double(-2.5)])
                ),
            ])
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn parse_frame_limits() {
        let mut deep = BytesMut::from(&b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"[..]);
        assert_eq!(
            parse_frame(&mut deep, &limits()),
            Err(ProtocolError::TooDeep { max: 4 })
        );
        let mut wide = BytesMut::from(&b"*100\r\n"[..]);
        assert_eq!(
            parse_frame(&mut wide, &limits()),
            Err(ProtocolError::TooManyArgs { count: 100, max: 8 })
        );
        let mut neg = BytesMut::from(&b"*-2\r\n"[..]);
        assert_eq!(
            parse_frame(&mut neg, &limits()),
            Err(ProtocolError::Invalid("aggregate length"))
        );
        let mut unknown = BytesMut::from(&b"?1\r\n"[..]);
        assert_eq!(
            parse_frame(&mut unknown, &limits()),
            Err(ProtocolError::UnknownType('?'))
        );
    }

    #[test]
    fn integers_parse_strictly() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b" 1"), None);
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from);
        let line = "[a-zA-Z0-9 ]{0,16}".prop_map(Bytes::from);
        let leaf = prop_oneof![
            line.clone().prop_map(Frame::Simple),
            line.prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            bytes.clone().prop_map(Frame::Bulk),
            Just(Frame::Null),
            any::<bool>().prop_map(Frame::Boolean),
            (-1e12f64..1e12).prop_map(Frame::Double),
            Just(Frame::Double(f64::NEG_INFINITY)),
            bytes.prop_map(|text| Frame::Verbatim {
                format: *b"txt",
                text
            }),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
                proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Frame::Map),
            ]
        })
    }

    fn wide_limits() -> Limits {
        Limits {
            nesting_depth_max: 8,
            ..Limits::default()
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut parser = RequestParser::new(limits());
            let mut buf = BytesMut::from(&input[..]);
            let mut args = Vec::new();
            let mut rounds = 0;
            while let Ok(true) = parser.parse(&mut buf, &mut args) {
                prop_assert!(!args.is_empty());
                prop_assert!(args.len() <= limits().args_max);
                rounds += 1;
                prop_assert!(rounds <= input.len());
            }
            let mut buf = BytesMut::from(&input[..]);
            let _ = parse_frame(&mut buf, &limits());
        }

        #[test]
        fn biased_bytes_never_panic(parts in proptest::collection::vec(
            prop_oneof![
                Just(&b"*"[..]), Just(&b"$"[..]), Just(&b"\r\n"[..]), Just(&b"-1"[..]),
                Just(&b"3"[..]), Just(&b"abc"[..]), Just(&b"\""[..]), Just(&b"%1"[..]),
                Just(&b","[..]), Just(&b"="[..]), Just(&b"_"[..]), Just(&b"#t"[..]),
            ], 0..40)) {
            let input: Vec<u8> = parts.concat();
            let mut parser = RequestParser::new(limits());
            let mut buf = BytesMut::from(&input[..]);
            let mut args = Vec::new();
            while let Ok(true) = parser.parse(&mut buf, &mut args) {}
            let mut buf = BytesMut::from(&input[..]);
            let _ = parse_frame(&mut buf, &limits());
        }

        #[test]
        fn request_roundtrip(args in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..40), 1..8), split in 0usize..400) {
            let mut wire = BytesMut::new();
            encode_request(&args, &mut wire);
            let split = split.min(wire.len());
            let mut parser = RequestParser::new(limits());
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            let complete = parser.parse(&mut buf, &mut got).expect("valid prefix");
            if !complete {
                buf.extend_from_slice(&wire[split..]);
                prop_assert!(parser.parse(&mut buf, &mut got).expect("valid"));
            }
            let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, args);
        }

        #[test]
        fn reply_roundtrip(frame in arb_frame()) {
            let mut buf = BytesMut::from(frame.to_bytes(Protocol::Resp3).as_ref());
            let parsed = parse_frame(&mut buf, &wide_limits()).expect("valid").expect("whole");
            prop_assert_eq!(&parsed, &frame);
            prop_assert!(buf.is_empty());
            let mut buf = BytesMut::from(frame.to_bytes(Protocol::Resp2).as_ref());
            let parsed = parse_frame(&mut buf, &wide_limits()).expect("valid").expect("whole");
            prop_assert_eq!(parsed, frame.to_resp2());
        }
    }
}
