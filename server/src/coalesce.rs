//! Fewer, larger writes on gRPC connections.
//!
//! h2 (under tonic) writes a connection's frames from its own buffer and
//! flushes the socket whenever it has nothing more to send. Two things
//! made that one write per response under load:
//!
//! - **h2 flushes as soon as the responses ready at that moment are
//!   buffered**, and each handler finishes its response in its own task.
//!   The connection's task is woken by the first response and writes it
//!   alone, before the handlers already due to run have finished theirs:
//!   the broker bench measured 0.77 `sendto` per call.
//! - **h2 gathers only small frames**: under 256 bytes when the socket takes
//!   vectored writes, under 1 KiB when it does not. A larger DATA frame is
//!   written from its own buffer, and h2 flushes before it takes the next
//!   frame. A lease carrying a registry's JWT (commonly 1–2 KiB) is such a
//!   response.
//!
//! [`Coalesced`] wraps each connection's socket. It keeps what h2 writes
//! until h2 flushes, and it puts a flush off once: it wakes the
//! connection's task and answers `Pending`, so the tasks already due to run
//! go first and the responses they finish join the same write. Under load
//! one write then carries many responses (about 0.1 `sendto` per call in the
//! same bench, and about half the server's CPU per call); on an idle
//! connection the flush waits only for one turn of the scheduler. Data is
//! never held past the second flush. It also tells h2 it has no vectored
//! writes, so frames under 1 KiB are gathered with their neighbours.
//!
//! [`small_frames`] cuts the DATA of a response of up to [`MAX_CUT`] bytes
//! into frames under h2's 1 KiB limit, so those are gathered too: a lease
//! with a 2 KiB registry token goes out as three frames in the shared
//! buffer rather than as a write of its own. Larger bodies (listings) keep
//! their frames: they are few, and each already fills a write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::body::Body;

/// Bytes gathered before they are written out even without a flush.
const MAX_PENDING: usize = 64 * 1024;
/// A drained buffer larger than this is given back, so idle connections
/// hold no more than this beside h2's own buffer.
const KEEP_CAPACITY: usize = 4 * 1024;
/// The largest DATA frame h2 copies into its write buffer when writes are
/// not vectored (it chains frames of 1024 bytes and more).
pub const FRAME_CUT: usize = 1023;
/// Response data up to this size is cut into [`FRAME_CUT`] pieces.
pub const MAX_CUT: usize = 4 * 1024;

/// A stream whose writes are gathered until flushed (see the module docs).
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    /// Accepted bytes not yet written; `pending[written..]` is still due.
    pending: Vec<u8>,
    written: usize,
    /// A flush was put off once, behind the tasks already due to run.
    deferred: bool,
}

impl<S> Coalesced<S> {
    /// `inner`, with its writes gathered.
    pub fn new(inner: S) -> Self {
        Self { inner, pending: Vec::new(), written: 0, deferred: false }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out every gathered byte.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.len() + buf.len() > MAX_PENDING {
            ready!(this.poll_drain(cx))?;
            if buf.len() >= MAX_PENDING {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Puts a flush with bytes due off once, behind the tasks already due
    /// to run (see the module docs); the next call writes them out.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.written < self.pending.len() && !self.deferred {
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.deferred = false;
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// False, on purpose: h2 then gathers frames up to 1 KiB rather than
    /// 256 bytes in its own buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesced<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// `response`, its data cut into frames h2 gathers (see the module docs).
pub fn small_frames(response: http::Response<Body>) -> http::Response<Body> {
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, Body::new(SmallFrames { inner: body, rest: Bytes::new() }))
}

/// A body yielding its data in pieces of at most [`FRAME_CUT`] bytes.
struct SmallFrames {
    inner: Body,
    /// What is left of the data frame being cut.
    rest: Bytes,
}

impl SmallFrames {
    fn next_piece(&mut self) -> Frame<Bytes> {
        let piece = self.rest.split_to(self.rest.len().min(FRAME_CUT));
        Frame::data(piece)
    }
}

impl HttpBody for SmallFrames {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(this.next_piece())));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.len() > FRAME_CUT && data.len() <= MAX_CUT => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(this.next_piece())))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A sink that takes at most `step` bytes per write and counts writes.
    #[derive(Default)]
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        writes: usize,
        flushes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_are_gathered_until_a_flush_sends_them_in_one_write() {
        let mut stream = Coalesced::new(Trickle { step: usize::MAX, ..Trickle::default() });
        for part in [&b"frame head"[..], b" and payload", b", the next response"] {
            stream.write_all(part).await.unwrap();
        }
        assert_eq!(stream.get_ref().writes, 0, "nothing is written before the flush");
        stream.flush().await.unwrap();
        assert_eq!(stream.get_ref().writes, 1);
        assert_eq!(stream.get_ref().flushes, 1);
        assert_eq!(stream.get_ref().got, b"frame head and payload, the next response");
    }

    /// Counts wake-ups.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_flush_gives_way_once_to_the_tasks_due_to_run_then_writes() {
        let wakes = std::sync::Arc::new(Wakes::default());
        let waker = futures_util::task::waker(std::sync::Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut stream = Coalesced::new(Trickle { step: usize::MAX, ..Trickle::default() });
        let flush = |stream: &mut Coalesced<Trickle>, cx: &mut Context<'_>| Pin::new(stream).poll_flush(cx);
        assert!(flush(&mut stream, &mut cx).is_ready(), "nothing due: nothing to wait for");
        assert!(Pin::new(&mut stream).poll_write(&mut cx, b"first response").is_ready());
        assert!(flush(&mut stream, &mut cx).is_pending(), "the first flush gives way");
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1, "and wakes its task, so it is polled again");
        assert_eq!(stream.get_ref().writes, 0);
        assert!(Pin::new(&mut stream).poll_write(&mut cx, b", second").is_ready());
        assert!(flush(&mut stream, &mut cx).is_ready(), "the next flush writes");
        assert_eq!((stream.get_ref().writes, stream.get_ref().got.as_slice()), (1, &b"first response, second"[..]));
        assert!(Pin::new(&mut stream).poll_write(&mut cx, b"later").is_ready());
        assert!(flush(&mut stream, &mut cx).is_pending(), "each new batch gives way once");
    }

    #[tokio::test]
    async fn a_short_writing_socket_gets_every_byte_in_order() {
        let mut stream = Coalesced::new(Trickle { step: 7, ..Trickle::default() });
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        stream.write_all(&data[..3000]).await.unwrap();
        stream.write_all(&data[3000..]).await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(stream.get_ref().got, data);
    }

    #[tokio::test]
    async fn more_than_the_bound_is_written_out_without_waiting_for_a_flush() {
        let mut stream = Coalesced::new(Trickle { step: usize::MAX, ..Trickle::default() });
        let chunk = vec![1u8; MAX_PENDING / 2 + 1];
        stream.write_all(&chunk).await.unwrap();
        assert_eq!(stream.get_ref().writes, 0);
        stream.write_all(&chunk).await.unwrap();
        assert_eq!(stream.get_ref().got.len(), chunk.len(), "the first chunk went out to make room");
        let big = vec![2u8; MAX_PENDING + 10];
        stream.write_all(&big).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(stream.get_ref().got.len(), 2 * chunk.len() + big.len());
        assert_eq!(stream.pending.capacity(), 0, "a large drained buffer is given back");
    }

    #[tokio::test]
    async fn reads_pass_through_and_the_peer_sees_flushed_writes() {
        let (near, far) = tokio::io::duplex(64);
        let (mut near, mut far) = (Coalesced::new(near), far);
        far.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        near.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let mut echoed = vec![0u8; 200];
        let sent = async {
            near.write_all(&[b'x'; 200]).await.unwrap();
            near.flush().await.unwrap();
        };
        let (_, read) = tokio::join!(sent, far.read_exact(&mut echoed));
        read.unwrap();
        assert!(echoed.iter().all(|&b| b == b'x'), "more than the pipe holds arrives, in parts");
    }

    async fn frames_of(data: Vec<u8>) -> Vec<usize> {
        use http_body_util::BodyExt;
        let body = Body::new(http_body_util::Full::new(Bytes::from(data)).map_err(|never| match never {}));
        let mut body = small_frames(http::Response::new(body)).into_body();
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        sizes
    }

    #[tokio::test]
    async fn response_data_up_to_the_bound_is_cut_into_frames_h2_gathers() {
        assert_eq!(frames_of(vec![7; 300]).await, [300], "small data stays one frame");
        assert_eq!(frames_of(vec![7; FRAME_CUT]).await, [FRAME_CUT]);
        assert_eq!(frames_of(vec![7; 2100]).await, [FRAME_CUT, FRAME_CUT, 2100 - 2 * FRAME_CUT]);
        assert_eq!(frames_of(vec![7; MAX_CUT + 1]).await, [MAX_CUT + 1], "listings keep their frames");
    }

    #[tokio::test]
    async fn cut_frames_keep_every_byte_in_order_and_the_trailers() {
        use http_body_util::BodyExt;
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames =
            vec![Ok::<_, tonic::Status>(Frame::data(Bytes::from(data.clone()))), Ok(Frame::trailers(trailers))];
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        let collected = small_frames(http::Response::new(body)).into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).unwrap(), "0");
        assert_eq!(collected.to_bytes(), data);
    }
}
