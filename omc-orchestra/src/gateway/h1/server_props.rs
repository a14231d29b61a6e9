//! Properties of the lane's request framing: the head parser and the chunked decoder never
//! panic, chunked bodies decode to what was encoded however the bytes arrive, and the
//! lane reads a request's body as hyper does.
//!
//! The differential oracle is hyper itself: a real `hyper::server::conn::http1`
//! connection over an in-memory pipe, whose service collects the body. The lane must
//! agree with it (both refuse, or both read the same body) except where it is stricter
//! on purpose (see `gateway/http1/framing.rs`): a `Content-Length` beside a
//! `Transfer-Encoding`, a `Transfer-Encoding` other than `chunked` alone, and a bare LF
//! ending a head line, which hyper may accept and the lane refuses.

use super::{parse, BodyKind, LaneOptions, Parsed};
use crate::gateway::http1::{Dechunk, Dechunked};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the lane reads the first request of `raw`: its body, `None` when it refuses it
/// (or it is incomplete), `Err` when it leaves it to the fallback.
fn lane_reads(raw: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let options = LaneOptions {
        max_buffered_body: usize::MAX,
        ..LaneOptions::default()
    };
    let taken = match parse(raw, &options) {
        Parsed::Taken(taken) => taken,
        Parsed::Malformed(_) | Parsed::Partial => return Ok(None),
        Parsed::Elsewhere => return Err(()),
    };
    let rest = &raw[taken.head_len..];
    Ok(match taken.body {
        BodyKind::Length(len) => rest.get(..len).map(<[u8]>::to_vec),
        BodyKind::Chunked => {
            let mut dechunk = Dechunk::default();
            match dechunk.read(rest) {
                Ok(Dechunked::Done(_)) => Some(dechunk.into_body()),
                _ => None,
            }
        }
    })
}

/// How hyper's HTTP/1.1 server reads the first request of `raw`: its body, `None` when it
/// refuses it or the body breaks off.
fn hyper_reads(raw: &[u8]) -> Option<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async {
                let answer = match req.into_body().collect().await {
                    Ok(body) => http::Response::new(Full::new(body.to_bytes())),
                    Err(_) => {
                        let mut broken = http::Response::new(Full::default());
                        *broken.status_mut() = http::StatusCode::IM_A_TEAPOT;
                        broken
                    }
                };
                Ok::<_, std::convert::Infallible>(answer)
            });
        // The request's end is the pipe's: hyper must still answer after it.
        let connection = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let served = tokio::spawn(connection);
        client.write_all(raw).await.ok()?;
        client.shutdown().await.ok()?;
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.ok()?;
        let _ = served.await;
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut answer = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(head_len) = answer.parse(&out).ok()? else {
            return None;
        };
        if answer.code != Some(200) {
            return None;
        }
        let length = answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())?;
        out.get(head_len..head_len + length).map(<[u8]>::to_vec)
    })
}

/// A `Content-Length` value, valid or not.
fn length_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..6).prop_map(|n| n.to_string()),
        Just("03".to_owned()),
        Just("+3".to_owned()),
        Just("-3".to_owned()),
        Just("3 3".to_owned()),
        Just("3, 3".to_owned()),
        Just("\u{663}".to_owned()),
        Just(String::new()),
        Just("0x3".to_owned()),
        Just("18446744073709551616".to_owned()),
    ]
}

/// A `Transfer-Encoding` value, valid or not.
fn coding_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("chunked".to_owned()),
        Just("Chunked".to_owned()),
        Just("gzip, chunked".to_owned()),
        Just("chunked, gzip".to_owned()),
        Just("identity".to_owned()),
        Just(String::new()),
    ]
}

/// A header line of a generated head: `None` marks a folded continuation line.
fn header_line() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        length_value().prop_map(|v| ("Content-Length".to_owned(), v)),
        coding_value().prop_map(|v| ("Transfer-Encoding".to_owned(), v)),
        Just(("Host".to_owned(), "gw".to_owned())),
        Just(("X-Note".to_owned(), "a b".to_owned())),
        Just(("Connection".to_owned(), "keep-alive".to_owned())),
        Just((String::new(), " folded".to_owned())),
    ]
}

/// One chunk-size line, well formed or not, for `size`.
fn chunk_line(size: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(format!("{size:x}\r\n")),
        1 => Just(format!("{size:X}\r\n")),
        1 => Just(format!("000{size:x}\r\n")),
        1 => Just(format!("{size:x};name=value\r\n")),
        1 => Just(format!("{size:x} ;x\r\n")),
        1 => Just(format!("{size:x}\n")),
        1 => Just(format!("{size:x};a\nb\r\n")),
        1 => Just(format!("{size:x};a\rb\r\n")),
        1 => Just("10000000000000000\r\n".to_owned()),
        1 => Just(format!("{size:x} 1\r\n")),
        1 => Just(format!("\r\n{size:x}\r\n")),
    ]
}

/// A chunked body of `data`, cut into chunks whose lines may be malformed.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunks = prop::collection::vec(prop::collection::vec(b'a'..=b'z', 1..8), 0..4);
    (chunks, any::<bool>(), any::<bool>())
        .prop_flat_map(|(chunks, trailer, bare_end)| {
            let lines: Vec<_> = chunks.iter().map(|c| chunk_line(c.len())).collect();
            (lines, Just(chunks), Just(trailer), Just(bare_end))
        })
        .prop_map(|(lines, chunks, trailer, bare_end)| {
            let mut body = Vec::new();
            for (line, data) in lines.iter().zip(&chunks) {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(data);
                body.extend_from_slice(if bare_end { b"\n" } else { b"\r\n" });
            }
            body.extend_from_slice(b"0\r\n");
            if trailer {
                body.extend_from_slice(b"X-T: 1\r\n");
            }
            body.extend_from_slice(b"\r\n");
            body
        })
}

/// A generated request: its bytes, and whether it has what the lane refuses on purpose
/// though hyper may accept it.
fn request() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let lines = prop::collection::vec((header_line(), any::<bool>()), 0..5);
    let body = prop_oneof![prop::collection::vec(b'a'..=b'z', 0..8), chunked_body(),];
    (lines, any::<bool>(), body).prop_map(|(lines, bare_request_line, body)| {
        let mut raw = b"POST /x HTTP/1.1".to_vec();
        raw.extend_from_slice(if bare_request_line { b"\n" } else { b"\r\n" });
        let mut bare = bare_request_line;
        let (mut length, mut codings) = (false, Vec::new());
        for ((name, value), bare_end) in &lines {
            if !name.is_empty() {
                raw.extend_from_slice(format!("{name}: ").as_bytes());
            }
            raw.extend_from_slice(value.as_bytes());
            raw.extend_from_slice(if *bare_end { b"\n" } else { b"\r\n" });
            bare |= *bare_end;
            length |= name == "Content-Length";
            if name == "Transfer-Encoding" {
                codings.extend(value.split(',').map(|c| c.trim().to_ascii_lowercase()));
            }
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&body);
        let coded = !codings.is_empty();
        let chunked_alone = codings == ["chunked"];
        (raw, bare || (length && coded) || (coded && !chunked_alone))
    })
}

proptest! {
    #[test]
    fn the_lane_reads_a_body_as_hyper_does((raw, stricter) in request()) {
        let lane = lane_reads(&raw);
        prop_assert!(lane.is_ok(), "the lane left it elsewhere");
        let lane = lane.unwrap_or_default();
        if stricter {
            prop_assert_eq!(lane, None, "{}", String::from_utf8_lossy(&raw));
        } else {
            prop_assert_eq!(lane, hyper_reads(&raw), "{}", String::from_utf8_lossy(&raw));
        }
    }

    #[test]
    fn the_head_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&raw, &LaneOptions::default());
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend_from_slice(&raw);
        let _ = parse(&head, &LaneOptions::default());
    }

    #[test]
    fn chunked_bodies_decode_to_what_was_encoded(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut raw = Vec::new();
        for chunk in &chunks {
            raw.extend_from_slice(format!("{:x};e=1\r\n", chunk.len()).as_bytes());
            raw.extend_from_slice(chunk);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");
        let whole_len = raw.len();
        raw.extend_from_slice(b"NEXT");
        // Read as the bytes come, cut anywhere: the same body, ending at the same byte.
        let mut ends: Vec<usize> = cuts.iter().map(|cut| cut.index(raw.len())).collect();
        ends.sort_unstable();
        let mut dechunk = Dechunk::default();
        for end in ends {
            let read = dechunk.read(&raw[..end]);
            prop_assert!(
                matches!(read, Ok(Dechunked::More) | Ok(Dechunked::Done(_))),
                "{read:?}"
            );
            if read != Ok(Dechunked::More) {
                prop_assert!(end >= whole_len);
                return Ok(());
            }
        }
        prop_assert_eq!(dechunk.read(&raw), Ok(Dechunked::Done(whole_len)));
        prop_assert_eq!(dechunk.into_body(), chunks.concat());
    }

    #[test]
    fn the_chunked_decoder_never_panics_nor_overreads(
        raw in prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b';'), Just(b'0'), Just(b'f'), any::<u8>()],
            0..200,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut dechunk = Dechunk::default();
        let first = dechunk.read(&raw[..cut.index(raw.len() + 1)]);
        if first == Ok(Dechunked::More) {
            if let Ok(Dechunked::Done(used)) = dechunk.read(&raw) {
                prop_assert!(used <= raw.len());
            }
        }
        if let Ok(Dechunked::Done(used)) = Dechunk::default().read(&raw) {
            prop_assert!(used <= raw.len());
        }
    }
}
