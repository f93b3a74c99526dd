//! `google.rpc.Status` and `google.rpc.RetryInfo`, written as prost derives from their field
//! numbers: the error body of OTLP/HTTP and the details that tell an OTLP/gRPC client a
//! RESOURCE_EXHAUSTED is worth retrying (and when).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A gRPC status carrying `RetryInfo { retry_delay }` in `grpc-status-details-bin`.
pub fn retryable(code: tonic::Code, message: String, retry_delay: Duration) -> tonic::Status {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: retry_delay.as_secs() as i64,
            nanos: retry_delay.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![ProtoAny { type_url: RETRY_INFO_TYPE.into(), value: info.encode_to_vec() }],
    };
    tonic::Status::with_details(code, message, Bytes::from(details.encode_to_vec()))
}

/// The error body of an OTLP/HTTP answer, in the request's encoding.
pub fn http_error_body(code: tonic::Code, message: &str, json: bool) -> Vec<u8> {
    if json {
        serde_json::json!({ "code": code as i32, "message": message }).to_string().into_bytes()
    } else {
        RpcStatus { code: code as i32, message: message.into(), details: Vec::new() }.encode_to_vec()
    }
}
