//! The parsers that read untrusted bytes, for the fuzz targets in `fuzz/`: each takes
//! any input and panics only where a property the parser promises does not hold.

/// Parse a client request head as the gateway's HTTP/1.1 lane does.
pub fn request_head(bytes: &[u8]) {
    crate::gateway::fuzz_request_head(bytes);
}

/// Decode a chunked body as the lane does, whole and cut in two at `bytes[0]`.
pub fn chunked_body(bytes: &[u8]) {
    crate::gateway::fuzz_chunked_body(bytes);
}

/// Normalise a request path; what comes out must be normal already.
pub fn path(text: &str) {
    crate::gateway::fuzz_path(text);
}

/// Parse a `traceparent` value; what parses must write back to itself.
pub fn traceparent(text: &str) {
    if let Some(parsed) = crate::gateway::TraceParent::parse(text) {
        assert_eq!(
            crate::gateway::TraceParent::parse(&parsed.header()),
            Some(parsed)
        );
    }
}
