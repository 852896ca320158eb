//! W3C trace context (`traceparent`): one order is one trace, from the unit's business system
//! through collection-svc into bureau-svc, visible as `trace_id` in both services' logs.

use tonic::metadata::MetadataMap;

/// A trace and the span that is its current parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub parent_id: String,
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && value.bytes().any(|b| b != b'0')
}

impl TraceContext {
    /// A new trace.
    pub fn root() -> Self {
        Self { trace_id: hex::encode(rand::random::<[u8; 16]>()), parent_id: hex::encode(rand::random::<[u8; 8]>()) }
    }

    /// The same trace with a new span of ours as parent.
    pub fn child(&self) -> Self {
        Self { trace_id: self.trace_id.clone(), parent_id: hex::encode(rand::random::<[u8; 8]>()) }
    }

    /// Continues `trace_id` (as stored) with a new span.
    pub fn continuing(trace_id: &str) -> Self {
        if is_hex(trace_id, 32) {
            Self { trace_id: trace_id.to_owned(), parent_id: String::new() }.child()
        } else {
            Self::root()
        }
    }

    /// Parses `00-<trace-id>-<parent-id>-<flags>`; anything else is None.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid =
            version.len() == 2 && version != "ff" && is_hex(trace_id, 32) && is_hex(parent_id, 16) && flags.len() == 2;
        valid.then(|| Self { trace_id: trace_id.to_owned(), parent_id: parent_id.to_owned() })
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.parent_id)
    }

    /// The caller's trace, or a new one.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        metadata.get("traceparent").and_then(|v| v.to_str().ok()).and_then(Self::parse).unwrap_or_else(Self::root)
    }

    /// Sends this trace on with a call.
    pub fn inject(&self, metadata: &mut MetadataMap) {
        if let Ok(value) = self.header().parse() {
            metadata.insert("traceparent", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_traceparent() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert_eq!(context.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.header(), header);
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.parent_id, context.parent_id);
        for bad in [
            "",
            "00-zz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        assert_eq!(TraceContext::continuing(&context.trace_id).trace_id, context.trace_id);
        assert_ne!(TraceContext::continuing("junk").trace_id, "junk");
    }

    #[test]
    fn travels_in_metadata() {
        let context = TraceContext::root();
        let mut metadata = MetadataMap::new();
        context.inject(&mut metadata);
        assert_eq!(TraceContext::from_metadata(&metadata), context);
        assert_ne!(TraceContext::from_metadata(&MetadataMap::new()).trace_id, context.trace_id);
    }
}
