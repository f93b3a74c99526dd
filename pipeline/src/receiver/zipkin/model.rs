//! Zipkin v2's span, as JSON and protobuf carry it, in one shape for [`super::translate`].

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoint {
    pub service_name: String,
    /// An IPv4 or IPv6 address in text form; empty when absent.
    pub ip: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Unspecified,
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Annotation {
    pub timestamp_us: u64,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    /// 64-bit trace ids are left-padded with zeros.
    pub trace_id: [u8; 16],
    pub id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub kind: Kind,
    pub name: String,
    pub timestamp_us: u64,
    pub duration_us: u64,
    pub local_endpoint: Option<Endpoint>,
    pub remote_endpoint: Option<Endpoint>,
    pub annotations: Vec<Annotation>,
    pub tags: Vec<(String, String)>,
    pub shared: bool,
}
