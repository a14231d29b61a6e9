//! W3C trace context: validate an incoming `traceparent` and make the one the upstream
//! gets, with the same trace id and a new span (parent) id.

use rand::rngs::OsRng;
use rand::RngCore;
use std::cell::Cell;

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

    /// Accept `value` when it is absent or a valid `traceparent`; else the error names the
    /// field `traceparent`.
    pub fn check(value: Option<&str>) -> crate::Result<()> {
        match value {
            Some(text) if Self::parse(text).is_none() => Err(crate::Error::invalid(
                "traceparent",
                "must be a W3C traceparent: 00-<32 hex digits>-<16 hex digits>-<2 hex digits>",
            )),
            _ => Ok(()),
        }
    }

    /// The header value.
    pub fn header(&self) -> String {
        let mut text = Vec::with_capacity(55);
        self.put(&mut text);
        String::from_utf8(text).unwrap_or_default()
    }

    /// Append the header value.
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(b"00-");
        out.extend_from_slice(self.trace_id.as_bytes());
        out.push(b'-');
        out.extend_from_slice(self.parent_id.as_bytes());
        out.push(b'-');
        out.push(DIGITS[usize::from(self.flags >> 4)]);
        out.push(DIGITS[usize::from(self.flags & 0xf)]);
    }
}

thread_local! {
    /// This thread's id generator state, seeded from the operating system.
    static IDS: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if OsRng.try_fill_bytes(&mut bytes).is_err() {
        // The thread generator is itself seeded from the operating system.
        rand::thread_rng().fill_bytes(&mut bytes);
    }
    u64::from_le_bytes(bytes)
}

/// The next 64 random bits of this thread (wyrand: a Weyl sequence through a 128-bit
/// multiply; statistically sound, a few instructions a call). Ids only need to be unique
/// and unguessable enough not to collide, not secret.
fn next_random() -> u64 {
    IDS.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

/// The eight lowercase hex digits of `value`, most significant first.
fn hex8(value: u32) -> [u8; 8] {
    // Spread the eight nibbles into the eight bytes, then turn each into its digit:
    // '0' + n, plus the gap up to 'a' where n is 10 or more.
    let mut x = u64::from(value);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// A random id of `words` (1 or 2) 64-bit words as lowercase hex digits, not all zero.
fn random_id(words: usize) -> String {
    let mut hex = [0u8; 32];
    let hex = &mut hex[..16 * words.clamp(1, 2)];
    loop {
        let mut any = 0;
        for out in hex.chunks_exact_mut(16) {
            let word = next_random();
            any |= word;
            out[..8].copy_from_slice(&hex8((word >> 32) as u32));
            out[8..].copy_from_slice(&hex8(word as u32));
        }
        if any != 0 {
            break;
        }
    }
    // Hex digits are ASCII, so this never falls back.
    String::from(std::str::from_utf8(hex).unwrap_or_default())
}

/// The `traceparent` to send upstream: the caller's trace with a new span id when its
/// header is valid, else a new sampled trace.
pub fn next_traceparent(incoming: Option<&str>) -> TraceParent {
    match incoming.and_then(TraceParent::parse) {
        Some(parent) => TraceParent {
            parent_id: random_id(1),
            ..parent
        },
        None => TraceParent {
            trace_id: random_id(2),
            parent_id: random_id(1),
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

    #[test]
    fn new_ids_are_well_formed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let next = next_traceparent(None);
            assert_eq!(next.flags, 1);
            assert!(hex_id(&next.trace_id, 32), "{}", next.trace_id);
            assert!(hex_id(&next.parent_id, 16), "{}", next.parent_id);
            assert_eq!(TraceParent::parse(&next.header()), Some(next.clone()));
            assert!(seen.insert(next.trace_id));
            assert!(seen.insert(next.parent_id));
        }
        // Every digit position takes many values: no stuck bits.
        let ids: Vec<String> = (0..256).map(|_| random_id(2)).collect();
        for position in 0..32 {
            let digits: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(digits.len() >= 12, "position {position}: {digits:?}");
        }
    }

    #[test]
    fn threads_draw_different_ids() {
        let ids: Vec<String> = (0..4)
            .map(|_| std::thread::spawn(|| random_id(2)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    }

    #[test]
    fn hex_digits_are_the_value() {
        for value in [0u32, 1, 0x0123_4567, 0x89ab_cdef, u32::MAX, 0xa9f0_5e1b] {
            assert_eq!(hex8(value).as_slice(), format!("{value:08x}").as_bytes());
        }
    }

    proptest::proptest! {
        /// Whatever the header holds, parsing never panics, and what parses is written
        /// back (version 00) as a header that parses to the same trace.
        #[test]
        fn traceparents_parse_or_are_refused(
            value in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[ ]?[0-9a-f]{2}-[0-9a-fA-F]{32}-[0-9a-f]{16}-[0-9a-fA-F]{2}(-[a-z0-9]{0,4})?[ ]?",
            ]
        ) {
            if let Some(parsed) = TraceParent::parse(&value) {
                proptest::prop_assert_eq!(TraceParent::parse(&parsed.header()), Some(parsed.clone()));
                proptest::prop_assert_eq!(parsed.header().len(), 55);
            }
        }
    }
}
