//! W3C trace context: validate an incoming `traceparent` and make the one the upstream
//! gets, with the same trace id and a new span (parent) id.

use rand::Rng;

/// A parsed `traceparent` header (version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

fn hex_id(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text.bytes().any(|b| b != b'0')
}

impl TraceParent {
    /// Parse a header value; `None` when it is not a valid `traceparent`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !version.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if !hex_id(trace_id, 32) || !hex_id(parent_id, 16) || flags.len() != 2 {
            return None;
        }
        Some(Self {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// The header value.
    pub fn header(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        text.push_str(&self.trace_id);
        text.push('-');
        text.push_str(&self.parent_id);
        text.push('-');
        text.push(char::from(DIGITS[usize::from(self.flags >> 4)]));
        text.push(char::from(DIGITS[usize::from(self.flags & 0xf)]));
        text
    }
}

fn random_hex(bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::thread_rng();
    loop {
        let mut id = String::with_capacity(bytes * 2);
        for _ in 0..bytes {
            let byte: u8 = rng.gen();
            id.push(char::from(DIGITS[usize::from(byte >> 4)]));
            id.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        if id.bytes().any(|b| b != b'0') {
            return id;
        }
    }
}

/// The `traceparent` to send upstream: the caller's trace with a new span id when its
/// header is valid, else a new sampled trace.
pub fn next_traceparent(incoming: Option<&str>) -> TraceParent {
    match incoming.and_then(TraceParent::parse) {
        Some(parent) => TraceParent {
            parent_id: random_hex(8),
            ..parent
        },
        None => TraceParent {
            trace_id: random_hex(16),
            parent_id: random_hex(8),
            flags: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_header_keeps_trace_and_gets_new_span() {
        let next = next_traceparent(Some(VALID));
        assert_eq!(next.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(next.parent_id, "00f067aa0ba902b7");
        assert_eq!(next.flags, 1);
        assert!(TraceParent::parse(&next.header()).is_some());
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
            let next = next_traceparent(Some(bad));
            assert_ne!(next.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }
}
