//! The fields of the OTLP trace messages (opentelemetry-proto 0.33, OTLP 1.7), as the walker needs
//! them: which tags hold a nested message, a string, bytes or a scalar of which wire type. Tags
//! not listed are unknown fields, skipped as prost skips them.

use super::reader::WireType;

/// The messages of `ExportTraceServiceRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Msg {
    pub(super) fn name(self) -> &'static str {
        match self {
            Msg::Request => "ExportTraceServiceRequest",
            Msg::ResourceSpans => "ResourceSpans",
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::ScopeSpans => "ScopeSpans",
            Msg::Scope => "InstrumentationScope",
            Msg::Span => "Span",
            Msg::Event => "Span.Event",
            Msg::Link => "Span.Link",
            Msg::Status => "Status",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
        }
    }
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Message(Msg),
    /// UTF-8 checked, as prost does for `string`.
    Str,
    Bytes,
    /// Any varint scalar (`uint32`, `int32`, `int64`, `bool`, enums): prost truncates, never refuses.
    Varint,
    Fixed32,
    Fixed64,
    Unknown,
}

impl Field {
    /// The only wire type prost takes for this field (no packed scalars here: none is repeated).
    pub(super) fn wire_type(self) -> Option<WireType> {
        match self {
            Field::Message(_) | Field::Str | Field::Bytes => Some(WireType::LengthDelimited),
            Field::Varint => Some(WireType::Varint),
            Field::Fixed32 => Some(WireType::ThirtyTwoBit),
            Field::Fixed64 => Some(WireType::SixtyFourBit),
            Field::Unknown => None,
        }
    }
}

#[inline]
pub(super) fn field(msg: Msg, tag: u32) -> Field {
    use Field::*;
    match (msg, tag) {
        (Msg::Request, 1) => Message(Msg::ResourceSpans),

        (Msg::ResourceSpans, 1) => Message(Msg::Resource),
        (Msg::ResourceSpans, 2) => Message(Msg::ScopeSpans),
        (Msg::ResourceSpans, 3) => Str,

        (Msg::Resource, 1) => Message(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => Message(Msg::EntityRef),

        (Msg::EntityRef, 1..=4) => Str,

        (Msg::ScopeSpans, 1) => Message(Msg::Scope),
        (Msg::ScopeSpans, 2) => Message(Msg::Span),
        (Msg::ScopeSpans, 3) => Str,

        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => Message(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,

        (Msg::Span, 1 | 2 | 4) => Bytes,
        (Msg::Span, 3 | 5) => Str,
        (Msg::Span, 6 | 10 | 12 | 14) => Varint,
        (Msg::Span, 7 | 8) => Fixed64,
        (Msg::Span, 9) => Message(Msg::KeyValue),
        (Msg::Span, 11) => Message(Msg::Event),
        (Msg::Span, 13) => Message(Msg::Link),
        (Msg::Span, 15) => Message(Msg::Status),
        (Msg::Span, 16) => Fixed32,

        (Msg::Event, 1) => Fixed64,
        (Msg::Event, 2) => Str,
        (Msg::Event, 3) => Message(Msg::KeyValue),
        (Msg::Event, 4) => Varint,

        (Msg::Link, 1 | 2) => Bytes,
        (Msg::Link, 3) => Str,
        (Msg::Link, 4) => Message(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => Fixed32,

        (Msg::Status, 2) => Str,
        (Msg::Status, 3) => Varint,

        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => Message(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,

        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => Message(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Message(Msg::KeyValueList),
        (Msg::AnyValue, 7) => Bytes,

        (Msg::ArrayValue, 1) => Message(Msg::AnyValue),
        (Msg::KeyValueList, 1) => Message(Msg::KeyValue),

        _ => Unknown,
    }
}
