//! Every non-OK status carries an ErrorInfo, also those that tonic itself answers before a
//! handler runs: a request that is not a valid protobuf message of its method (INTERNAL from
//! the codec becomes INVALID_ARGUMENT `MALFORMED_REQUEST`), a message over the size limit
//! (OUT_OF_RANGE becomes RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE`, with the limit), a method
//! that does not exist (UNIMPLEMENTED `UNKNOWN_METHOD`). Handlers' own statuses already carry
//! details and pass unchanged.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};

use crate::status::ApiError;

/// A tower layer adding ErrorInfo to the statuses the framework answers.
#[derive(Clone, Copy)]
pub struct ErrorInfoLayer {
    /// The ErrorInfo domain, e.g. `bureau.fiscalbill`.
    pub domain: &'static str,
    /// The largest message the server decodes, named in MESSAGE_TOO_LARGE.
    pub max_message_bytes: usize,
}

impl<S> tower::Layer<S> for ErrorInfoLayer {
    type Service = ErrorInfoService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorInfoService { inner, layer: *self }
    }
}

#[derive(Clone)]
pub struct ErrorInfoService<S> {
    inner: S,
    layer: ErrorInfoLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for ErrorInfoService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let layer = self.layer;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            // Statuses in the headers (trailers-only answers) without details are the framework's.
            if headers.contains_key("grpc-status-details-bin") {
                return Ok(response);
            }
            let Some(status) = Status::from_header_map(headers).filter(|s| s.code() != Code::Ok) else {
                return Ok(response);
            };
            let detailed = explain(&status, &path, layer.max_message_bytes).into_status(layer.domain);
            headers.remove("grpc-status");
            headers.remove("grpc-message");
            if detailed.add_header(headers).is_err() {
                // Cannot happen for the statuses built here; the original answer stands.
                status.add_header(headers).ok();
            }
            Ok(response)
        })
    }
}

/// The detailed error for a status the framework answered on `path`.
fn explain(status: &Status, path: &str, max_message_bytes: usize) -> ApiError {
    let message = status.message();
    let known = crate::proto::method_name(path).is_some();
    match status.code() {
        Code::Internal | Code::InvalidArgument if message.contains("decode") => ApiError::new(
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            format!("the request is not a valid message of this method: {message}"),
        ),
        Code::OutOfRange | Code::ResourceExhausted if message.contains("too large") => ApiError::new(
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            format!("the message is larger than this server takes ({max_message_bytes} bytes)"),
        )
        .with("limit_bytes", max_message_bytes),
        Code::Unimplemented if !known => ApiError::new(
            Code::Unimplemented,
            "UNKNOWN_METHOD",
            "no such method here: see the service's .proto files or server reflection",
        )
        .with("method", path.chars().take(200).collect::<String>()),
        Code::Unimplemented if message.contains("compress") => {
            ApiError::new(Code::Unimplemented, "COMPRESSION_NOT_SUPPORTED", message.to_owned())
        }
        code => ApiError::new(code, code_reason(code), message.to_owned()),
    }
}

/// The code's name as a reason (`DEADLINE_EXCEEDED`), for the framework's other statuses.
fn code_reason(code: Code) -> &'static str {
    match code {
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::Ok | Code::Internal => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE: &str = "/fiscalbill.bureau.v1.BureauService/IssueBill";

    #[test]
    fn framework_statuses_get_their_reasons() {
        let cases = [
            (
                Status::internal("failed to decode Protobuf message: invalid wire type"),
                ISSUE,
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
            ),
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 104857600 bytes, the limit is: 4194304 bytes",
                ),
                ISSUE,
                Code::ResourceExhausted,
                "MESSAGE_TOO_LARGE",
            ),
            (
                Status::unimplemented(""),
                "/fiscalbill.bureau.v1.BureauService/Nope",
                Code::Unimplemented,
                "UNKNOWN_METHOD",
            ),
            (Status::unimplemented(""), "/x.Y/Z", Code::Unimplemented, "UNKNOWN_METHOD"),
            (
                Status::unimplemented("Content is compressed with `zstd` which isn't supported"),
                ISSUE,
                Code::Unimplemented,
                "COMPRESSION_NOT_SUPPORTED",
            ),
            (Status::deadline_exceeded("timeout"), ISSUE, Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
        ];
        for (status, path, code, reason) in cases {
            let error = explain(&status, path, 4 << 20);
            assert_eq!((error.code, error.reason), (code, reason), "{status:?} on {path}");
        }
        let too_large = explain(&Status::out_of_range("message length too large"), ISSUE, 4 << 20);
        assert!(too_large.message.contains("4194304"), "{}", too_large.message);
    }
}
