//! HTTP/1.1 framing: how long a message's body is (`Content-Length`,
//! `Transfer-Encoding`), which answers have none, and how a chunked body's lines are
//! read. The lane's request parser, its upstream answer parser and the upstream body
//! call these, so a client and an upstream meet the same rules.
//!
//! The rules are hyper's (`proto/h1/role.rs`, `proto/h1/decode.rs`), stricter in four
//! places, as a proxy must be where two parsers could read one message two ways, or
//! where it would pass on a body it cannot label: a `Content-Length` beside a
//! `Transfer-Encoding`, a `Transfer-Encoding` other than `chunked` alone (as nginx
//! refuses it), a bare LF ending a line, and a chunk line longer than
//! [`MAX_CHUNK_LINE`] are refused.

use http::{Method, StatusCode};

/// Longest chunk-size line (size, extensions and CRLF): a line has no reason to be long,
/// and a bound keeps a client from making the lane buffer an endless one.
pub(crate) const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Longest trailer line of a chunked body, as long as a whole head may be.
const MAX_TRAILER_LINE: usize = crate::gateway::h1::MAX_HEAD;

/// Why a message's framing is refused: the text says which rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// How a message's body is framed, as its headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declared {
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// A valid `Content-Length` (repeated lines all equal).
    Length(u64),
    /// Neither: a request has no body, an answer's runs until the connection closes.
    Unknown,
}

/// The framing `headers` declare for a message of HTTP/1.1 (`http11`) or 1.0.
pub(crate) fn declared(
    headers: &[httparse::Header<'_>],
    http11: bool,
) -> Result<Declared, Malformed> {
    // `codings` counts the codings of every line; `chunked` is whether all are chunked.
    let (mut length, mut codings, mut chunked) = (None, 0, true);
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = content_length(header.value)?;
            if length.is_some_and(|seen| seen != value) {
                return Err(Malformed("Content-Length is given twice, unequal"));
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in header.value.split(|&b| b == b',') {
                codings += 1;
                chunked &= coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
    }
    // A coding besides `chunked` (`gzip, chunked`, which hyper takes) is refused: the
    // gateway undoes the chunking only, and would pass the rest on unlabelled.
    let (coded, chunked) = (codings > 0, codings == 1 && chunked);
    match (coded, length) {
        (false, Some(length)) => Ok(Declared::Length(length)),
        (false, None) => Ok(Declared::Unknown),
        (true, _) if !http11 => Err(Malformed("Transfer-Encoding in HTTP/1.0")),
        (true, Some(_)) => Err(Malformed("both Content-Length and Transfer-Encoding")),
        (true, None) if chunked => Ok(Declared::Chunked),
        (true, None) => Err(Malformed("Transfer-Encoding is not chunked alone")),
    }
}

/// A `Content-Length` value: ASCII digits only (no sign, space, list or other digit),
/// within `u64`.
pub(crate) fn content_length(value: &[u8]) -> Result<u64, Malformed> {
    if value.is_empty() {
        return Err(Malformed("Content-Length is empty"));
    }
    value.iter().try_fold(0u64, |length, &b| {
        if !b.is_ascii_digit() {
            return Err(Malformed("Content-Length is not a number"));
        }
        length
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(b - b'0')))
            .ok_or(Malformed("Content-Length is too large"))
    })
}

/// Whether the answer of `status` to a `method` request has no body, whatever its
/// headers declare.
pub(crate) fn bodiless(method: &Method, status: StatusCode) -> bool {
    *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether `bytes` end a line with a bare LF (one not after a CR) anywhere.
pub(crate) fn has_bare_lf(bytes: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
        let at = from + at;
        if at == 0 || bytes[at - 1] != b'\r' {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The chunk-size line at the start of `buf`: the bytes it takes and the size;
/// `None` while incomplete. Hex digits (within `u64`), optional spaces or tabs, and
/// extensions after `;` (neither CR nor LF in them), ended by CRLF.
pub(crate) fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Malformed> {
    let mut size = 0u64;
    let mut digits = 0;
    let mut at = 0;
    while let Some(&b) = buf.get(at) {
        let Some(digit) = char::from(b).to_digit(16) else {
            break;
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(Malformed("the chunk size overflows"))?;
        digits += 1;
        at += 1;
    }
    if at < buf.len() && digits == 0 {
        return Err(Malformed("a chunk line has no size"));
    }
    while matches!(buf.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    if buf.get(at) == Some(&b';') {
        while let Some(&b) = buf.get(at) {
            match b {
                b'\r' => break,
                b'\n' => return Err(Malformed("a chunk extension holds a line feed")),
                _ => at += 1,
            }
        }
    }
    let line = match (buf.get(at), buf.get(at + 1)) {
        (Some(b'\r'), Some(b'\n')) => Some((at + 2, size)),
        (Some(b'\r'), Some(_)) => return Err(Malformed("a chunk line's CR is not before LF")),
        (Some(b'\r'), None) | (None, _) => None,
        (Some(_), _) => return Err(Malformed("a chunk line holds a stray byte")),
    };
    if line.map_or(buf.len(), |(used, _)| used) > MAX_CHUNK_LINE {
        return Err(Malformed("a chunk line is too long"));
    }
    Ok(line)
}

/// The CRLF after a chunk's data at the start of `buf`: whether it is there (`false`
/// while incomplete).
pub(crate) fn chunk_end(buf: &[u8]) -> Result<bool, Malformed> {
    match buf {
        [b'\r', b'\n', ..] => Ok(true),
        [] | [b'\r'] => Ok(false),
        _ => Err(Malformed("a chunk's data does not end in CRLF")),
    }
}

/// The trailer line at the start of `buf` (dropped by the lane): the bytes it takes and
/// whether it is the empty line that ends the body; `None` while incomplete.
pub(crate) fn trailer_line(buf: &[u8]) -> Result<Option<(usize, bool)>, Malformed> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_TRAILER_LINE {
            return Err(Malformed("a trailer line is too long"));
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
        return Err(Malformed("a trailer line does not end in CRLF"));
    }
    if lf > MAX_TRAILER_LINE {
        return Err(Malformed("a trailer line is too long"));
    }
    Ok(Some((lf + 1, lf == 1)))
}

/// Where a whole chunked body stands in [`Dechunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A chunked body read whole from a buffer that grows: it reads from where it stopped,
/// leaving the buffer as it is, so that the bytes can still go elsewhere whole.
#[derive(Debug)]
pub(crate) struct Dechunk {
    /// How far into the buffer it has read.
    at: usize,
    stage: Stage,
    body: Vec<u8>,
}

/// What [`Dechunk::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Dechunked {
    /// The body ends after this many bytes of the buffer.
    Done(usize),
    /// The body needs more bytes.
    More,
}

impl Default for Dechunk {
    fn default() -> Self {
        Self {
            at: 0,
            stage: Stage::Size,
            body: Vec::new(),
        }
    }
}

impl Dechunk {
    /// Read on in `buf` (the same bytes as before, maybe more after them).
    pub(crate) fn read(&mut self, buf: &[u8]) -> Result<Dechunked, Malformed> {
        loop {
            let rest = &buf[self.at.min(buf.len())..];
            match self.stage {
                Stage::Size => {
                    let Some((used, size)) = chunk_size(rest)? else {
                        return Ok(Dechunked::More);
                    };
                    self.at += used;
                    self.stage = if size == 0 {
                        Stage::Trailers
                    } else {
                        Stage::Data(size)
                    };
                }
                Stage::Data(left) => {
                    if rest.is_empty() {
                        return Ok(Dechunked::More);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.body.extend_from_slice(&rest[..take]);
                    self.at += take;
                    let left = left - take as u64;
                    self.stage = if left == 0 {
                        Stage::DataEnd
                    } else {
                        Stage::Data(left)
                    };
                }
                Stage::DataEnd => {
                    if !chunk_end(rest)? {
                        return Ok(Dechunked::More);
                    }
                    self.at += 2;
                    self.stage = Stage::Size;
                }
                Stage::Trailers => {
                    let Some((used, last)) = trailer_line(rest)? else {
                        return Ok(Dechunked::More);
                    };
                    self.at += used;
                    if last {
                        return Ok(Dechunked::Done(self.at));
                    }
                }
            }
        }
    }

    /// The bytes of the body decoded so far.
    pub(crate) fn len(&self) -> usize {
        self.body.len()
    }

    /// The body decoded.
    pub(crate) fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(raw: &[u8]) -> Vec<httparse::Header<'_>> {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(raw, &mut slots)
        else {
            panic!("the test headers parse");
        };
        parsed.to_vec()
    }

    fn framing(raw: &[u8]) -> Result<Declared, Malformed> {
        declared(&headers(raw), true)
    }

    #[test]
    fn lengths_are_plain_digits_and_agree() {
        assert_eq!(
            framing(b"Content-Length: 5\r\n\r\n"),
            Ok(Declared::Length(5))
        );
        assert_eq!(
            framing(b"Content-Length: 5\r\ncontent-length: 5\r\n\r\n"),
            Ok(Declared::Length(5))
        );
        assert_eq!(framing(b"Host: a\r\n\r\n"), Ok(Declared::Unknown));
        for bad in [
            &b"Content-Length: +5\r\n\r\n"[..],
            b"Content-Length: -5\r\n\r\n",
            b"Content-Length: 5 5\r\n\r\n",
            b"Content-Length: 5, 5\r\n\r\n",
            b"Content-Length: \xd9\xa5\r\n\r\n",
            b"Content-Length: 0x5\r\n\r\n",
            b"Content-Length: \r\n\r\n",
            b"Content-Length: 18446744073709551616\r\n\r\n",
            b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ] {
            assert!(framing(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunked_must_be_the_only_coding() {
        assert_eq!(
            framing(b"Transfer-Encoding:  Chunked \r\n\r\n"),
            Ok(Declared::Chunked)
        );
        for bad in [
            &b"Transfer-Encoding: chunked, gzip\r\n\r\n"[..],
            b"Transfer-Encoding: gzip, chunked\r\n\r\n",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"Transfer-Encoding: chunked,\r\n\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"Transfer-Encoding: \r\n\r\n",
        ] {
            assert!(framing(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let chunked = headers(b"Transfer-Encoding: chunked\r\n\r\n");
        assert!(declared(&chunked, false).is_err(), "not in HTTP/1.0");
    }

    #[test]
    fn bare_line_feeds_are_found() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nA: b\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(has_bare_lf(b"A: b\r\n\n"));
    }

    #[test]
    fn chunk_lines_are_read_strictly() {
        assert_eq!(chunk_size(b"1f\r\n"), Ok(Some((4, 31))));
        assert_eq!(chunk_size(b"5 ;a=b; c\r\nxx"), Ok(Some((11, 5))));
        assert_eq!(
            chunk_size(b"ffffffffffffffff\r\n"),
            Ok(Some((18, u64::MAX)))
        );
        assert_eq!(chunk_size(b"00000000000000000001\r\n"), Ok(Some((22, 1))));
        for partial in [&b""[..], b"5", b"5\r", b"5;ext", b"5 "] {
            assert_eq!(chunk_size(partial), Ok(None), "{partial:?}");
        }
        let long = [b"5;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
        for bad in [
            &b"5\n"[..],
            b"\r\n",
            b";x\r\n",
            b"10000000000000000\r\n",
            b"5;a\nb\r\n",
            b"5;a\rb\r\n",
            b"5 5\r\n",
            b"-5\r\n",
            b"5\r\r",
            &long,
        ] {
            assert!(chunk_size(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_chunked_body_is_read_across_reads() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut dechunk = Dechunk::default();
        for end in 0..raw.len() - 4 {
            assert_eq!(dechunk.read(&raw[..end]), Ok(Dechunked::More), "{end}");
        }
        assert_eq!(dechunk.read(raw), Ok(Dechunked::Done(raw.len() - 4)));
        assert_eq!(dechunk.into_body(), b"hello world");
        for bad in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nX-T: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                Dechunk::default().read(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn some_answers_have_no_body() {
        assert!(bodiless(&Method::HEAD, StatusCode::OK));
        assert!(bodiless(&Method::GET, StatusCode::NO_CONTENT));
        assert!(bodiless(&Method::GET, StatusCode::NOT_MODIFIED));
        assert!(bodiless(&Method::GET, StatusCode::CONTINUE));
        assert!(!bodiless(&Method::GET, StatusCode::OK));
    }
}
