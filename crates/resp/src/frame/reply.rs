//! Replies: the encoder (RESP2 and RESP3) and [`parse_frame`], the reader of
//! any RESP value (see the encoding table in the parent module).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Limits, ProtocolError, parse_i64};

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
