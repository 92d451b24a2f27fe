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
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
            if buffer.len() > limit {
                return Ok(Collected::TooLarge(ProxyBody::Prefixed(
                    Some(buffer.freeze()),
                    Box::new(body),
                )));
            }
        }
        // Trailers are dropped on buffered bodies: Graph uses none, and a rewritten body is
        // sent with a Content-Length.
    }
    Ok(Collected::Whole(buffer.freeze()))
}
