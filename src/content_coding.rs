//! Content codings of response bodies we rewrite: decode under a size limit, re-encode
//! with the same coding afterwards.
//!
//! Decoding is bounded by the caller's limit so a small compressed body cannot expand
//! into gigabytes, and corrupt or truncated input is an error, never a panic and never a
//! silently shortened body. Anything we cannot decode exactly (unknown or stacked codings)
//! is reported by [`Coding::from_header`] so the caller streams the body untouched.

use std::fmt;
use std::io::{self, Read};

use flate2::{Compression, Decompress, FlushDecompress, Status};

/// Level 1: bodies are re-encoded on the hot path, where a few percent of ratio matter
/// less than latency; JSON still shrinks about fivefold at this level.
const DEFLATE_LEVEL: u32 = 1;
/// Brotli quality 4 is the fastest with context modelling; a 64 KiB body takes well
/// under a millisecond.
const BROTLI_QUALITY: i32 = 4;
/// Brotli's default window; decoders must accept it.
const BROTLI_WINDOW_BITS: i32 = 22;
/// Output grows in steps of this size until the limit, so a small body does not
/// reserve the whole limit up front.
const DECODE_STEP: usize = 64 * 1024;

/// One content coding, as named in `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// zlib-wrapped DEFLATE as HTTP defines it; raw DEFLATE is also accepted on decode.
    Deflate,
    Br,
}

impl Coding {
    /// `None` when the coding is unsupported or several are stacked (`gzip, br`): the
    /// caller then streams the body untouched.
    pub fn from_header(value: Option<&http::HeaderValue>) -> Option<Coding> {
        let Some(value) = value else {
            return Some(Coding::Identity);
        };
        let value = value.to_str().ok()?;
        let mut codings = value.split(',').map(str::trim).filter(|c| !c.is_empty());
        let Some(name) = codings.next() else {
            return Some(Coding::Identity);
        };
        if codings.next().is_some() {
            return None;
        }
        [
            ("identity", Coding::Identity),
            ("gzip", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("br", Coding::Br),
        ]
        .into_iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known))
        .map(|(_, coding)| coding)
    }
}

#[derive(Debug)]
pub enum CodingError {
    /// The decoded body would exceed the limit.
    TooLarge { limit: usize },
    /// The body is not valid for its coding (corrupt, truncated, trailing bytes).
    Corrupt(io::Error),
    /// The encoder failed.
    Encode(io::Error),
}

impl fmt::Display for CodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodingError::TooLarge { limit } => {
                write!(f, "decoded body exceeds the {limit} byte limit")
            }
            CodingError::Corrupt(_) => write!(f, "compressed body is corrupt"),
            CodingError::Encode(_) => write!(f, "compressing the body failed"),
        }
    }
}

impl std::error::Error for CodingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodingError::TooLarge { .. } => None,
            CodingError::Corrupt(e) | CodingError::Encode(e) => Some(e),
        }
    }
}

/// Decodes `data`; the result never exceeds `limit` bytes.
pub fn decode(coding: Coding, data: &[u8], limit: usize) -> Result<Vec<u8>, CodingError> {
    match coding {
        Coding::Identity if data.len() > limit => Err(CodingError::TooLarge { limit }),
        Coding::Identity => Ok(data.to_vec()),
        Coding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(data), limit),
        Coding::Deflate => inflate(data, looks_like_zlib(data), limit),
        Coding::Br => unbrotli(data, limit),
    }
}

/// Encodes `data` with `coding`.
pub fn encode(coding: Coding, data: &[u8]) -> Result<Vec<u8>, CodingError> {
    use std::io::Write;
    let level = Compression::new(DEFLATE_LEVEL);
    let capacity = data.len() / 4 + 64;
    match coding {
        Coding::Identity => Ok(data.to_vec()),
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(capacity), level);
            encoder.write_all(data).map_err(CodingError::Encode)?;
            encoder.finish().map_err(CodingError::Encode)
        }
        Coding::Deflate => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::with_capacity(capacity), level);
            encoder.write_all(data).map_err(CodingError::Encode)?;
            encoder.finish().map_err(CodingError::Encode)
        }
        Coding::Br => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_QUALITY,
                lgwin: BROTLI_WINDOW_BITS,
                size_hint: data.len(),
                ..Default::default()
            };
            let mut out = Vec::with_capacity(capacity);
            brotli::BrotliCompress(&mut &data[..], &mut out, &params)
                .map_err(CodingError::Encode)?;
            Ok(out)
        }
    }
}

/// Reads a decoder to its end, failing once it yields more than `limit` bytes.
fn read_limited(decoder: impl Read, limit: usize) -> Result<Vec<u8>, CodingError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(CodingError::Corrupt)?;
    if out.len() > limit {
        return Err(CodingError::TooLarge { limit });
    }
    Ok(out)
}

/// RFC 1950: compression method 8, a window of at most 32 KiB, and a header checksum.
/// A raw DEFLATE stream passes this by chance only 1 time in about 500, and then fails
/// to decode rather than decoding to something wrong.
fn looks_like_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// Inflates with flate2's low-level API rather than its readers: the readers report a
/// truncated stream as a clean end, and a short body must not pass as a whole one.
fn inflate(data: &[u8], zlib_header: bool, limit: usize) -> Result<Vec<u8>, CodingError> {
    let corrupt = |why: &str| CodingError::Corrupt(io::Error::new(io::ErrorKind::InvalidData, why));
    let mut inflater = Decompress::new(zlib_header);
    let mut out = Vec::new();
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return Err(CodingError::TooLarge { limit });
            }
            // One byte past the limit is enough to tell "too large" from "exactly full".
            let room = (limit - out.len()).saturating_add(1).min(DECODE_STEP);
            out.reserve_exact(room);
        }
        let consumed = usize::try_from(inflater.total_in()).map_err(|_| corrupt("offset"))?;
        let input = data.get(consumed..).ok_or_else(|| corrupt("offset"))?;
        let produced_before = out.len();
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(|e| CodingError::Corrupt(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if out.len() > limit {
            return Err(CodingError::TooLarge { limit });
        }
        let consumed_now = usize::try_from(inflater.total_in()).map_err(|_| corrupt("offset"))?;
        match status {
            Status::StreamEnd if consumed_now == data.len() => return Ok(out),
            Status::StreamEnd => return Err(corrupt("bytes after the end of the stream")),
            Status::Ok | Status::BufError => {
                let stalled = consumed_now == consumed && out.len() == produced_before;
                if stalled && out.len() < out.capacity() {
                    return Err(corrupt("stream ends before its final block"));
                }
            }
        }
    }
}

/// Decodes brotli with the low-level stream API: the reader ends quietly on bytes after
/// the stream, and a body with a tail we would drop must not pass as whole.
fn unbrotli(data: &[u8], limit: usize) -> Result<Vec<u8>, CodingError> {
    use brotli::{BrotliDecompressStream, BrotliResult, BrotliState, HeapAlloc, HuffmanCode};
    let corrupt = |why: &str| CodingError::Corrupt(io::Error::new(io::ErrorKind::InvalidData, why));
    let mut state = BrotliState::new(
        HeapAlloc::<u8>::new(0),
        HeapAlloc::<u32>::new(0),
        HeapAlloc::<HuffmanCode>::new(HuffmanCode::default()),
    );
    let mut available_in = data.len();
    let mut input_offset = 0;
    let mut total_out = 0;
    let mut chunk = vec![0u8; DECODE_STEP.min(limit.saturating_add(1)).max(1)];
    let mut out = Vec::new();
    loop {
        let mut available_out = chunk.len();
        let mut output_offset = 0;
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut input_offset,
            data,
            &mut available_out,
            &mut output_offset,
            &mut chunk,
            &mut total_out,
            &mut state,
        );
        let produced = chunk
            .get(..output_offset)
            .ok_or_else(|| corrupt("offset"))?;
        if out.len().saturating_add(produced.len()) > limit {
            return Err(CodingError::TooLarge { limit });
        }
        out.extend_from_slice(produced);
        match result {
            BrotliResult::ResultSuccess if available_in == 0 => return Ok(out),
            BrotliResult::ResultSuccess => {
                return Err(corrupt("bytes after the end of the stream"))
            }
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::NeedsMoreInput => {
                return Err(corrupt("stream ends before its last meta-block"))
            }
            BrotliResult::ResultFailure => return Err(corrupt("invalid brotli stream")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALL: [Coding; 4] = [Coding::Identity, Coding::Gzip, Coding::Deflate, Coding::Br];

    fn sample_json() -> Vec<u8> {
        let mut body = br#"{"value":["#.to_vec();
        for i in 0..500 {
            body.extend_from_slice(
                format!(r#"{{"id":"AAMkAGI2TG93AAA{i}=","subject":"Meeting {i}"}},"#).as_bytes(),
            );
        }
        body.extend_from_slice(br#"{}]}"#);
        body
    }

    fn header(value: &'static str) -> Option<Coding> {
        Coding::from_header(Some(&HeaderValue::from_static(value)))
    }

    #[test]
    fn header_names_map_to_codings() {
        assert_eq!(Coding::from_header(None), Some(Coding::Identity));
        assert_eq!(header("gzip"), Some(Coding::Gzip));
        assert_eq!(header("GZIP"), Some(Coding::Gzip));
        assert_eq!(header("x-gzip"), Some(Coding::Gzip));
        assert_eq!(header(" deflate "), Some(Coding::Deflate));
        assert_eq!(header("br"), Some(Coding::Br));
        assert_eq!(header("identity"), Some(Coding::Identity));
        assert_eq!(header(""), Some(Coding::Identity));
    }

    #[test]
    fn stacked_or_unknown_codings_are_unsupported() {
        assert_eq!(header("gzip, br"), None);
        assert_eq!(header("gzip,gzip"), None);
        assert_eq!(header("zstd"), None);
        assert_eq!(header("compress"), None);
        assert_eq!(
            Coding::from_header(Some(&HeaderValue::from_bytes(b"gz\xffip").unwrap())),
            None
        );
    }

    #[test]
    fn a_lone_trailing_comma_is_not_a_second_coding() {
        assert_eq!(header("gzip,"), Some(Coding::Gzip));
    }

    #[test]
    fn every_coding_round_trips() {
        let body = sample_json();
        for coding in ALL {
            let encoded = encode(coding, &body).unwrap();
            if coding != Coding::Identity {
                assert!(encoded.len() < body.len() / 3, "{coding:?} compresses JSON");
            }
            assert_eq!(
                decode(coding, &encoded, body.len()).unwrap(),
                body,
                "{coding:?}"
            );
        }
    }

    #[test]
    fn empty_bodies_round_trip() {
        for coding in ALL {
            let encoded = encode(coding, b"").unwrap();
            assert_eq!(decode(coding, &encoded, 0).unwrap(), b"", "{coding:?}");
        }
    }

    #[test]
    fn deflate_is_zlib_wrapped_and_raw_deflate_is_accepted() {
        let body = sample_json();
        let zlib = encode(Coding::Deflate, &body).unwrap();
        assert!(looks_like_zlib(&zlib));
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        std::io::Write::write_all(&mut raw, &body).unwrap();
        let raw = raw.finish().unwrap();
        assert!(!looks_like_zlib(&raw));
        assert_eq!(decode(Coding::Deflate, &raw, usize::MAX).unwrap(), body);
    }

    #[test]
    fn concatenated_gzip_members_decode_to_both_parts() {
        let mut both = encode(Coding::Gzip, b"{\"a\":").unwrap();
        both.extend(encode(Coding::Gzip, b"1}").unwrap());
        assert_eq!(decode(Coding::Gzip, &both, 100).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        for coding in ALL {
            let bomb = encode(coding, &zeros).unwrap();
            let limit = 1024 * 1024;
            assert!(
                matches!(
                    decode(coding, &bomb, limit),
                    Err(CodingError::TooLarge { limit: 1048576 })
                ),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn a_body_exactly_at_the_limit_is_accepted_and_one_over_is_not() {
        let body = sample_json();
        for coding in ALL {
            let encoded = encode(coding, &body).unwrap();
            assert_eq!(
                decode(coding, &encoded, body.len()).unwrap(),
                body,
                "{coding:?}"
            );
            assert!(
                matches!(
                    decode(coding, &encoded, body.len() - 1),
                    Err(CodingError::TooLarge { .. })
                ),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn truncated_bodies_are_corrupt_not_short() {
        let body = sample_json();
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
            let encoded = encode(coding, &body).unwrap();
            for cut in [
                1,
                2,
                10,
                encoded.len() / 2,
                encoded.len() - 4,
                encoded.len() - 1,
            ] {
                let result = decode(coding, &encoded[..cut], usize::MAX);
                assert!(
                    matches!(result, Err(CodingError::Corrupt(_))),
                    "{coding:?} cut at {cut}: {:?}",
                    result.map(|out| out.len())
                );
            }
        }
    }

    #[test]
    fn trailing_garbage_after_the_stream_is_corrupt() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
            let mut encoded = encode(coding, b"{\"a\":1}").unwrap();
            encoded.extend_from_slice(b"garbage");
            assert!(
                matches!(decode(coding, &encoded, 1000), Err(CodingError::Corrupt(_))),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn flipped_bytes_never_panic_and_never_pass_as_the_original() {
        let body = sample_json();
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
            let encoded = encode(coding, &body).unwrap();
            for at in (0..encoded.len()).step_by(7) {
                let mut damaged = encoded.clone();
                damaged[at] ^= 0x5a;
                if let Ok(out) = decode(coding, &damaged, 1 << 20) {
                    // Brotli has no checksum, so some flips decode to other text.
                    assert!(coding == Coding::Br || out == body, "{coding:?} at {at}");
                }
            }
        }
    }

    #[test]
    fn garbage_is_corrupt_for_every_compressed_coding() {
        let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
            for input in [&b""[..], b"{\"not\":\"compressed\"}", &garbage] {
                assert!(
                    matches!(decode(coding, input, 1 << 20), Err(CodingError::Corrupt(_))),
                    "{coding:?} {:?}",
                    input.get(..8)
                );
            }
        }
    }

    #[test]
    fn identity_obeys_the_limit_too() {
        assert_eq!(decode(Coding::Identity, b"abc", 3).unwrap(), b"abc");
        assert!(matches!(
            decode(Coding::Identity, b"abcd", 3),
            Err(CodingError::TooLarge { limit: 3 })
        ));
    }
}
