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

mod reply;
mod request;

pub use reply::{Frame, Protocol, encode_request, parse_frame, put_bulk, put_i64, put_u64};
pub use request::RequestParser;
pub(crate) use request::parse_i64;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
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
