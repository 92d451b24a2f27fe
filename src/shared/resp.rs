//! RESP2, the Redis wire protocol: commands out as arrays of bulk strings, replies in as
//! the five RESP2 types. Pure and synchronous, so it is tested on byte fixtures.
//!
//! Must not: trust a length the server sends (a bulk or array length is checked against a
//! cap before anything is allocated, and nesting is bounded), or panic on any byte sequence.
//! A reply that is cut short is "incomplete", never an error: the caller reads more bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Our replies are small (a script verdict, up to 1000 IDs of a few hundred bytes); a bulk
/// beyond this is not something we asked for.
const MAX_BULK_BYTES: usize = 16 << 20;

/// More elements than any command of ours can get back (1000 IDs per look-up).
const MAX_ARRAY_LEN: usize = 1 << 20;

/// Our scripts return flat arrays; deeper nesting is a confused or hostile peer.
const MAX_DEPTH: usize = 8;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the command failed; the connection is still good.
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// `$-1` or `*-1`: a missing key.
    Nil,
    Array(Vec<Value>),
}

impl Value {
    /// A bulk or simple string as UTF-8 text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            Value::Simple(text) => Some(text),
            Value::Error(_) | Value::Int(_) | Value::Nil | Value::Array(_) => None,
        }
    }
}

/// The peer sent bytes that are not RESP2 (or not within our caps).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a RESP2 reply: {0}")]
pub struct ProtocolError(&'static str);

/// One command: its name and arguments, each a binary-safe bulk string.
#[derive(Debug, Clone, Default)]
pub struct Command {
    args: Vec<Bytes>,
}

impl Command {
    pub fn new(name: &'static str) -> Command {
        Command {
            args: vec![Bytes::from_static(name.as_bytes())],
        }
    }

    pub fn arg(mut self, arg: impl Into<Bytes>) -> Command {
        self.args.push(arg.into());
        self
    }

    /// A number, in the decimal text Redis parses.
    pub fn num(self, n: impl ToString) -> Command {
        self.arg(n.to_string())
    }

    pub fn args<I, A>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: Into<Bytes>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends the command's wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(16 + self.args.iter().map(|a| a.len() + 16).sum::<usize>());
        put_header(out, b'*', self.args.len());
        for arg in &self.args {
            put_header(out, b'$', arg.len());
            out.put_slice(arg);
            out.put_slice(b"\r\n");
        }
    }
}

fn put_header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

/// Parses one reply from the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn parse_at(
    buf: &[u8],
    start: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("arrays nested too deep"));
    }
    let Some((line, after_line)) = line_at(buf, start)? else {
        return Ok(None);
    };
    let Some((&kind, rest)) = line.split_first() else {
        return Err(ProtocolError("empty line"));
    };
    let text = || {
        std::str::from_utf8(rest)
            .map(str::to_owned)
            .map_err(|_| ProtocolError("status line is not UTF-8"))
    };
    match kind {
        b'+' => Ok(Some((Value::Simple(text()?), after_line))),
        b'-' => Ok(Some((Value::Error(text()?), after_line))),
        b':' => Ok(Some((Value::Int(integer(rest)?), after_line))),
        b'$' => {
            let len = integer(rest)?;
            if len == -1 {
                return Ok(Some((Value::Nil, after_line)));
            }
            let len = length(len, MAX_BULK_BYTES)?;
            let end = after_line
                .checked_add(len)
                .ok_or(ProtocolError("bulk length overflows"))?;
            let Some(tail) = buf.get(end..end.saturating_add(2)) else {
                return Ok(None);
            };
            if tail.len() < 2 {
                return Ok(None);
            }
            if tail != b"\r\n" {
                return Err(ProtocolError("bulk not followed by CRLF"));
            }
            let body = Bytes::copy_from_slice(&buf[after_line..end]);
            Ok(Some((Value::Bulk(body), end + 2)))
        }
        b'*' => {
            let len = integer(rest)?;
            if len == -1 {
                return Ok(Some((Value::Nil, after_line)));
            }
            let len = length(len, MAX_ARRAY_LEN)?;
            // Capacity grows with what actually arrives, not with what the header claims.
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = after_line;
            for _ in 0..len {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(items), at)))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

/// The line starting at `start` without its CRLF, and the offset after the CRLF.
fn line_at(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let Some(rest) = buf.get(start..) else {
        return Ok(None);
    };
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            if nl == 0 || rest[nl - 1] != b'\r' {
                return Err(ProtocolError("line not ended by CRLF"));
            }
            Ok(Some((&rest[..nl - 1], start + nl + 1)))
        }
        // A header line is short; a long run without a newline is not RESP.
        None if rest.len() > 64 * 1024 => Err(ProtocolError("line too long")),
        None => Ok(None),
    }
}

fn integer(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("bad integer"))
}

fn length(len: i64, cap: usize) -> Result<usize, ProtocolError> {
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= cap)
        .ok_or(ProtocolError("length negative or over the cap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Value {
        let (value, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        value
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        Command::new("SET")
            .arg("k")
            .arg(Bytes::from_static(b"a\r\nb"))
            .num(1500)
            .encode(&mut out);
        assert_eq!(
            &out[..],
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n$4\r\n1500\r\n"
        );
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(one(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(
            one(b"-NOSCRIPT No matching script\r\n"),
            Value::Error("NOSCRIPT No matching script".into())
        );
        assert_eq!(one(b":-42\r\n"), Value::Int(-42));
        assert_eq!(one(b"$5\r\nhello\r\n"), Value::Bulk("hello".into()));
        assert_eq!(one(b"$0\r\n\r\n"), Value::Bulk(Bytes::new()));
        assert_eq!(one(b"$-1\r\n"), Value::Nil);
        assert_eq!(one(b"*-1\r\n"), Value::Nil);
        assert_eq!(
            one(b"*3\r\n:0\r\n$2\r\nab\r\n*1\r\n$-1\r\n"),
            Value::Array(vec![
                Value::Int(0),
                Value::Bulk("ab".into()),
                Value::Array(vec![Value::Nil])
            ])
        );
    }

    #[test]
    fn a_bulk_may_hold_crlf_and_binary() {
        assert_eq!(
            one(b"$4\r\n\r\n\xff\x00\r\n"),
            Value::Bulk(Bytes::from_static(b"\r\n\xff\x00"))
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_not_an_error() {
        let whole = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(whole).unwrap().is_some());
    }

    #[test]
    fn two_pipelined_replies_parse_one_at_a_time() {
        let bytes = b":1\r\n+OK\r\n";
        let (first, used) = parse(bytes).unwrap().unwrap();
        assert_eq!((first, used), (Value::Int(1), 4));
        let (second, _) = parse(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second, Value::Simple("OK".into()));
    }

    #[test]
    fn lying_lengths_and_garbage_are_errors_without_allocating() {
        assert!(parse(b"$99999999999\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        assert!(parse(b"$-2\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b":12a\r\n").is_err());
        assert!(parse(b"+OK\n").is_err());
        assert!(parse(b"\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(&[b'+'; 70 * 1024]).is_err());
    }

    #[test]
    fn text_comes_from_bulk_and_simple_strings_only() {
        assert_eq!(Value::Bulk("x".into()).as_text(), Some("x"));
        assert_eq!(Value::Simple("OK".into()).as_text(), Some("OK"));
        assert_eq!(Value::Int(1).as_text(), None);
        assert_eq!(Value::Bulk(Bytes::from_static(b"\xff")).as_text(), None);
    }
}
