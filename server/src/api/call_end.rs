//! When a gRPC call ends, and with which status: the one thing the log
//! line and the metrics both need from a response.
//!
//! An error is usually a trailers-only response (`grpc-status` in the
//! headers); a success ends with trailers after the body. A client that
//! goes away first ends the call without a status. [`observe`] calls its
//! closure exactly once, in each of these cases.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;

/// How a call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final code.
    pub code: tonic::Code,
    /// Its message.
    pub message: String,
}

impl Outcome {
    /// The status in `grpc-status`/`grpc-message` headers or trailers. An
    /// OK is read without allocating (it is every successful call); the
    /// message of an error is decoded as tonic does.
    pub fn of_headers(headers: &http::HeaderMap) -> Outcome {
        if headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"0") {
            return Outcome { code: tonic::Code::Ok, message: String::new() };
        }
        match tonic::Status::from_header_map(headers) {
            Some(status) => Outcome { code: status.code(), message: status.message().to_owned() },
            None => Outcome { code: tonic::Code::Unknown, message: "response without grpc-status".into() },
        }
    }
}

/// `response`, with `on_end` called once when the call ends: with its
/// outcome, or `None` when the client went away before the end.
pub fn observe<F>(response: Response<Body>, on_end: F) -> Response<Body>
where
    F: FnOnce(Option<&Outcome>) + Send + Unpin + 'static,
{
    if response.headers().contains_key("grpc-status") {
        on_end(Some(&Outcome::of_headers(response.headers())));
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(Observed { inner: body, on_end: Some(on_end) }))
}

/// A response body that reports the call's end.
struct Observed<F: FnOnce(Option<&Outcome>)> {
    inner: Body,
    on_end: Option<F>,
}

impl<F: FnOnce(Option<&Outcome>)> Observed<F> {
    fn end(&mut self, outcome: Option<&Outcome>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(outcome);
        }
    }
}

impl<F: FnOnce(Option<&Outcome>) + Unpin> HttpBody for Observed<F> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let outcome = Outcome::of_headers(trailers);
                    self.end(Some(&outcome));
                }
            }
            Poll::Ready(None) => self.end(Some(&Outcome {
                code: tonic::Code::Unknown,
                message: "the response ended without grpc-status".into(),
            })),
            Poll::Ready(Some(Err(status))) => {
                let outcome = Outcome { code: status.code(), message: status.message().to_owned() };
                self.end(Some(&outcome));
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FnOnce(Option<&Outcome>)> Drop for Observed<F> {
    fn drop(&mut self) {
        self.end(None);
    }
}
