//! The one body type that flows through the proxy, in both directions.
//!
//! Pass-through bodies stay hyper's `Incoming` and stream frame by frame (no boxing, no
//! buffering), so a 1 GiB upload or download passes in constant memory. Only a body we
//! rewrite is held in memory, and `Prefixed` lets us give back a body we started reading but
//! then found too large to rewrite, without losing a byte.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

pub enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    Stream(Incoming),
    /// Bytes already read from `rest`, sent before it. Boxed: only bodies found too large
    /// to rewrite take this path.
    Prefixed(Option<Bytes>, Box<ProxyBody>),
    /// A body that holds the request's admission (its in-flight slots) until it ends or is
    /// dropped, so Graph never sees more than `mailbox_concurrency` requests per mailbox,
    /// downloads included.
    Guarded(Box<ProxyBody>, crate::admit::AdmitPermit),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(bytes))
        }
    }
}

impl From<Incoming> for ProxyBody {
    fn from(body: Incoming) -> Self {
        ProxyBody::Stream(body)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Stream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Prefixed(prefix, rest) => match prefix.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Pin::new(rest.as_mut()).poll_frame(cx),
            },
            ProxyBody::Guarded(inner, _permit) => Pin::new(inner.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Stream(body) => body.is_end_stream(),
            ProxyBody::Prefixed(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
            ProxyBody::Guarded(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Stream(body) => body.size_hint(),
            ProxyBody::Prefixed(prefix, rest) => {
                let extra = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
            ProxyBody::Guarded(inner, _) => inner.size_hint(),
        }
    }
}

/// What reading a body up to a limit gave us.
pub enum Collected {
    /// The whole body, at most `limit` bytes.
    Whole(Bytes),
    /// The body is larger than the limit: what was read so far plus the unread rest, to be
    /// forwarded as it is.
    TooLarge(ProxyBody),
}

/// Reads `body` into memory if it ends within `limit` bytes; otherwise hands back a body that
/// replays what was read and streams the rest, so nothing is lost either way.
pub async fn collect_limited(mut body: ProxyBody, limit: usize) -> Result<Collected, hyper::Error> {
    match body {
        ProxyBody::Empty => return Ok(Collected::Whole(Bytes::new())),
        ProxyBody::Full(Some(bytes)) if bytes.len() <= limit => return Ok(Collected::Whole(bytes)),
        ProxyBody::Full(None) => return Ok(Collected::Whole(Bytes::new())),
        _ => {}
    }
    // A body that arrives in one frame (most small ones) is kept as it came, uncopied.
    let mut first: Option<Bytes> = None;
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            // Trailers are dropped on buffered bodies: Graph uses none, and a rewritten
            // body is sent with a Content-Length.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if first.is_none() && buffer.is_empty() {
            first = Some(data);
        } else {
            if let Some(earlier) = first.take() {
                // A second frame: the buffer is sized once for the whole body, so each byte
                // is copied once instead of again at every doubling of a growing buffer.
                let remaining = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
                buffer.reserve(join_capacity(earlier.len() + data.len(), remaining, limit));
                buffer.extend_from_slice(&earlier);
            }
            buffer.extend_from_slice(&data);
        }
        let held = first.as_ref().map_or(buffer.len(), Bytes::len);
        if held > limit {
            let prefix = first.take().unwrap_or_else(|| buffer.split().freeze());
            return Ok(Collected::TooLarge(ProxyBody::Prefixed(
                Some(prefix),
                Box::new(body),
            )));
        }
    }
    Ok(Collected::Whole(first.unwrap_or_else(|| buffer.freeze())))
}

/// The room to reserve for joining a body's frames: what is held so far plus what the
/// body says is still to come (its declared length), but never more than one byte past
/// `limit`, which is all `collect_limited` ever holds before giving up on a body: a body
/// that declares more than it sends, or more than the limit, cannot make it allocate more.
fn join_capacity(held: usize, remaining_hint: usize, limit: usize) -> usize {
    held.saturating_add(remaining_hint)
        .min(limit.saturating_add(1))
        .max(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives as these frames, in order.
    fn frames(parts: &[&'static [u8]]) -> ProxyBody {
        parts.iter().rev().fold(ProxyBody::Empty, |rest, part| {
            ProxyBody::Prefixed(Some(Bytes::from_static(part)), Box::new(rest))
        })
    }

    async fn read_all(body: ProxyBody) -> Vec<u8> {
        match body.collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(e) => panic!("an in-memory body failed: {e}"),
        }
    }

    async fn whole(body: ProxyBody, limit: usize) -> Option<Bytes> {
        match collect_limited(body, limit).await {
            Ok(Collected::Whole(bytes)) => Some(bytes),
            Ok(Collected::TooLarge(_)) => None,
            Err(e) => panic!("an in-memory body failed: {e}"),
        }
    }

    #[tokio::test]
    async fn one_frame_is_kept_without_a_copy() {
        let data = Bytes::from_static(b"{\"id\":\"AAMk\"}");
        let body = ProxyBody::Prefixed(Some(data.clone()), Box::new(ProxyBody::Empty));
        let got = whole(body, 1024).await.unwrap();
        assert_eq!(got, data);
        // The same allocation: a static slice handed through, not copied.
        assert_eq!(got.as_ptr(), data.as_ptr());
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_and_empty_ones_skipped() {
        let body = frames(&[b"{\"a\":", b"", b"[1,", b"2]}"]);
        assert_eq!(whole(body, 1024).await.unwrap(), &b"{\"a\":[1,2]}"[..]);
        assert_eq!(whole(frames(&[]), 1024).await.unwrap(), Bytes::new());
        // Exactly at the limit is still whole.
        assert_eq!(
            whole(frames(&[b"abc", b"de"]), 5).await.unwrap(),
            &b"abcde"[..]
        );
    }

    #[test]
    fn frames_are_joined_in_a_buffer_sized_once_and_never_past_the_limit() {
        // What the body declares is reserved up front...
        assert_eq!(join_capacity(16_384, 49_152, 1 << 20), 65_536);
        // ...but never more than the limit allows to be held, whatever it declares...
        assert_eq!(join_capacity(16_384, usize::MAX, 65_536), 65_537);
        assert_eq!(join_capacity(10, 1_000_000, 100), 101);
        // ...and always room for what is already held.
        assert_eq!(join_capacity(300, 0, 100), 300);
        assert_eq!(
            join_capacity(usize::MAX, usize::MAX, usize::MAX),
            usize::MAX
        );
    }

    #[tokio::test]
    async fn frames_with_a_declared_length_are_joined_whole() {
        // `frames` declares the exact remaining length, as a Content-Length body does.
        let parts: Vec<&'static [u8]> = vec![b"{\"id\":", b"\"AAMk", b"\"}", b""];
        let body = frames(&parts);
        assert_eq!(body.size_hint().exact(), Some(13));
        assert_eq!(whole(body, 1024).await.unwrap(), &b"{\"id\":\"AAMk\"}"[..]);
        assert_eq!(whole(frames(&parts), 13).await.unwrap().len(), 13);
        assert!(whole(frames(&parts), 12).await.is_none());
    }

    #[tokio::test]
    async fn over_the_limit_every_byte_is_still_sent_once() {
        for parts in [
            &[&b"0123456789"[..]][..],
            &[b"0123", b"4567", b"89"],
            &[b"01", b"23456789"],
        ] {
            match collect_limited(frames(parts), 5).await {
                Ok(Collected::TooLarge(rest)) => {
                    assert_eq!(read_all(rest).await, b"0123456789", "{parts:?}");
                }
                _ => panic!("{parts:?}: a 10-byte body passed a 5-byte limit"),
            }
        }
    }
}
