//! A lossless compact form for REST IDs, so a million cached mappings fit the memory budget.
//!
//! REST IDs are base64 in Graph's REST alphabet (`_` and `-` in place of `+` and `/`), with
//! `=` padding on regular IDs and none on immutable ones. Stored decoded they take three
//! quarters of the space. Only strings that re-encode to exactly themselves are decoded, so
//! the form is lossless and two different strings never share one; anything else stays raw.
//! This must never change an ID: IDs are case-sensitive and compared byte for byte.

pub(super) const RAW: u8 = 0;
pub(super) const BASE64: u8 = 1;
pub(super) const BASE64_PADDED: u8 = 2;

const REST_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// Byte -> its value in `REST_ALPHABET`, or `NOT_REST` (every ID of a rewritten body is
/// decoded here once per look-up, so a table rather than a chain of ranges).
const SEXTETS: [u8; 256] = {
    let mut table = [NOT_REST; 256];
    let mut i = 0;
    while i < REST_ALPHABET.len() {
        table[REST_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_REST: u8 = 0xff;

fn sextet(c: u8) -> Option<u32> {
    let v = SEXTETS[usize::from(c)];
    (v != NOT_REST).then_some(u32::from(v))
}

/// Appends the compact form of `id` to `out` and returns its form tag.
pub(super) fn compact_into(id: &str, out: &mut Vec<u8>) -> u8 {
    let start = out.len();
    match decode_rest(id.as_bytes(), out) {
        Some(form) => form,
        None => {
            out.truncate(start);
            out.extend_from_slice(id.as_bytes());
            RAW
        }
    }
}

fn decode_rest(s: &[u8], out: &mut Vec<u8>) -> Option<u8> {
    let body_len = s.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    let (body, padding) = s.split_at_checked(body_len)?;
    let rem = body.len() % 4;
    let form = match (padding.len(), rem) {
        (_, 1) => return None,
        (0, _) if !body.is_empty() => BASE64,
        (p, r) if r != 0 && p == 4 - r => BASE64_PADDED,
        _ => return None,
    };
    out.reserve(body.len() * 3 / 4 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Left-over bits must be zero: otherwise two spellings would decode to the same bytes.
    (acc == 0).then_some(form)
}

pub(super) fn expand(form: u8, bytes: &[u8]) -> Option<String> {
    match form {
        RAW => std::str::from_utf8(bytes).ok().map(str::to_owned),
        BASE64 | BASE64_PADDED => {
            let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk.first().copied().unwrap_or(0),
                    chunk.get(1).copied().unwrap_or(0),
                    chunk.get(2).copied().unwrap_or(0),
                ];
                let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
                for k in 0..=chunk.len() {
                    // Masked to six bits, so the index is always in the 64-entry alphabet.
                    let c = REST_ALPHABET[(v >> (18 - 6 * k) & 63) as usize];
                    s.push(char::from(c));
                }
                if form == BASE64_PADDED {
                    for _ in chunk.len()..3 {
                        s.push('=');
                    }
                }
            }
            Some(s)
        }
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    pub(in crate::id_store) fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn compact_form_is_lossless_and_never_shared_by_two_strings() {
        let alphabet = b"ABab09_-=+/";
        let mut seen: HashMap<(u8, Vec<u8>), String> = HashMap::new();
        for n in 0..20_000u64 {
            let len = (n % 9) as usize;
            let s: String = bytes(n, len)
                .iter()
                .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
                .collect();
            let mut out = Vec::new();
            let form = compact_into(&s, &mut out);
            assert_eq!(expand(form, &out).as_deref(), Some(s.as_str()));
            if let Some(other) = seen.insert((form, out), s.clone()) {
                assert_eq!(other, s);
            }
        }
    }

    #[test]
    fn decoded_bytes_re_encode_with_their_padding() {
        for len in 0..8 {
            let b = bytes(len as u64, len);
            let padded = expand(BASE64_PADDED, &b).unwrap();
            assert_eq!(padded.len() % 4, 0, "{padded}");
            let mut out = Vec::new();
            let form = compact_into(&padded, &mut out);
            let bare = expand(BASE64, &b).unwrap();
            assert_eq!(bare, padded.trim_end_matches('='));
            if len > 0 {
                assert_eq!(out, b);
                assert_eq!(form, if len % 3 == 0 { BASE64 } else { BASE64_PADDED });
            }
        }
        assert_eq!(expand(9, b"x"), None);
    }
}
