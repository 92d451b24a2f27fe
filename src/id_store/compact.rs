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

/// Appends the compact form of `id` to `out` and returns its form tag.
pub(super) fn compact_into(id: &str, out: &mut Vec<u8>) -> u8 {
    let start = out.len();
    // The compact form is never longer than the ID (`compact_to`).
    out.resize(start + id.len(), 0);
    let (form, len) = out
        .get_mut(start..)
        .and_then(|room| compact_to(id, room))
        .unwrap_or((RAW, 0));
    out.truncate(start + len);
    form
}

/// Writes the compact form of `id` to the start of `out` and returns its form tag and
/// length, which is at most `id.len()`; `None` only when `out` is shorter than that. Every
/// look-up compacts its ID, into a stack buffer, so the probe allocates nothing.
pub(super) fn compact_to(id: &str, out: &mut [u8]) -> Option<(u8, usize)> {
    let raw = id.as_bytes();
    if let Some(decoded) = decode_rest(raw, out) {
        return Some(decoded);
    }
    out.get_mut(..raw.len())?.copy_from_slice(raw);
    Some((RAW, raw.len()))
}

/// Room inline for the compact key of a regular item ID: its REST text decodes to 113 bytes
/// (a 70-byte message entry ID, the mailbox GUID text and their headers). Longer IDs are
/// compacted at look-up as before.
const INLINE_KEY_LEN: usize = 120;

/// The compact form of a REST ID, worked out from the bytes `exchange_id` already decoded
/// the ID's text to while classifying it, so that the cache look-up that follows does not
/// decode the same text again. Inline, so carrying one allocates nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct CompactKey {
    form: u8,
    len: u8,
    bytes: [u8; INLINE_KEY_LEN],
}

impl CompactKey {
    /// The compact form of a REST-alphabet ID whose strict decoding (padding canonical,
    /// no left-over bits, as `classify` requires) gave `decoded`, `padded` when its text
    /// ended in `=`. That is exactly what `compact_to` makes of the text: `decode_rest`
    /// strips the (at most two) `=`, which leave a remainder of 3 or 2 characters, so the
    /// form is `BASE64_PADDED`, or `BASE64` without them, and the bytes are the same strict
    /// decoding. `None` when the bytes do not fit inline (then the look-up compacts the text).
    pub fn from_rest_decoding(decoded: &[u8], padded: bool) -> Option<CompactKey> {
        let len = u8::try_from(decoded.len()).ok()?;
        let mut bytes = [0u8; INLINE_KEY_LEN];
        bytes.get_mut(..decoded.len())?.copy_from_slice(decoded);
        (!decoded.is_empty()).then_some(CompactKey {
            form: if padded { BASE64_PADDED } else { BASE64 },
            len,
            bytes,
        })
    }

    pub(super) fn form(&self) -> u8 {
        self.form
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl std::fmt::Debug for CompactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactKey")
            .field("form", &self.form)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Strict decoding of REST-alphabet base64 (`exchange_id`'s decoder, which `classify` runs
/// on the same IDs): `None` unless the text re-encodes to exactly itself (canonical padding
/// and zero left-over bits).
fn decode_rest(s: &[u8], out: &mut [u8]) -> Option<(u8, usize)> {
    let body_len = s.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    let (body, padding) = s.split_at_checked(body_len)?;
    let rem = body.len() % 4;
    let form = match (padding.len(), rem) {
        (_, 1) => return None,
        (0, _) if !body.is_empty() => BASE64,
        (p, r) if r != 0 && p == 4 - r => BASE64_PADDED,
        _ => return None,
    };
    let len = crate::exchange_id::decode_rest_unpadded(body, out)?;
    Some((form, len))
}

pub(super) fn expand(form: u8, bytes: &[u8]) -> Option<String> {
    match form {
        RAW => std::str::from_utf8(bytes).ok().map(str::to_owned),
        BASE64 | BASE64_PADDED => {
            let whole = bytes.len() / 3 * 4;
            let tail_len = match (bytes.len() % 3, form) {
                (0, _) => 0,
                (_, BASE64_PADDED) => 4,
                (1, _) => 2,
                _ => 3,
            };
            // Sized exactly and filled in place: every hit of the cache expands its answer,
            // and growing the string four characters at a time was most of that.
            let mut s = vec![b'='; whole + tail_len];
            let (body, tail_out) = s.split_at_mut_checked(whole)?;
            // Masked to six bits, so the index is always in the 64-entry alphabet.
            let char_at = |v: u32, shift: u32| REST_ALPHABET[(v >> shift & 63) as usize];
            let chunks = bytes.chunks_exact(3);
            let tail = chunks.remainder();
            for (chunk, slot) in chunks.zip(body.chunks_exact_mut(4)) {
                let &[a, b, c] = chunk else {
                    return None;
                };
                let v = u32::from_be_bytes([0, a, b, c]);
                slot.copy_from_slice(&[
                    char_at(v, 18),
                    char_at(v, 12),
                    char_at(v, 6),
                    char_at(v, 0),
                ]);
            }
            // The tail's characters; padding, if any, is already in place after them.
            match *tail {
                [] => {}
                [a] => {
                    let v = u32::from_be_bytes([0, a, 0, 0]);
                    tail_out
                        .get_mut(..2)?
                        .copy_from_slice(&[char_at(v, 18), char_at(v, 12)]);
                }
                [a, b] => {
                    let v = u32::from_be_bytes([0, a, b, 0]);
                    tail_out.get_mut(..3)?.copy_from_slice(&[
                        char_at(v, 18),
                        char_at(v, 12),
                        char_at(v, 6),
                    ]);
                }
                _ => return None,
            }
            // Only alphabet characters and `=` were written: ASCII.
            String::from_utf8(s).ok()
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

    /// The bit-at-a-time decoder that `decode_rest` replaced, kept as its reference.
    fn compact_reference(id: &str) -> (u8, Vec<u8>) {
        fn decode(s: &[u8], out: &mut Vec<u8>) -> Option<u8> {
            let body_len = s.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
            let (body, padding) = s.split_at(body_len);
            let form = match (padding.len(), body.len() % 4) {
                (_, 1) => return None,
                (0, _) if !body.is_empty() => BASE64,
                (p, r) if r != 0 && p == 4 - r => BASE64_PADDED,
                _ => return None,
            };
            let (mut acc, mut bits) = (0u32, 0);
            for &c in body {
                let v = REST_ALPHABET.iter().position(|&a| a == c)?;
                acc = (acc << 6) | v as u32;
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                    acc &= (1 << bits) - 1;
                }
            }
            (acc == 0).then_some(form)
        }
        let mut out = Vec::new();
        match decode(id.as_bytes(), &mut out) {
            Some(form) => (form, out),
            None => (RAW, id.as_bytes().to_vec()),
        }
    }

    /// The character-at-a-time encoder that `expand` replaced, kept as its reference.
    fn expand_reference(form: u8, bytes: &[u8]) -> String {
        let mut s = String::new();
        for chunk in bytes.chunks(3) {
            let b = [0, 1, 2].map(|i| chunk.get(i).copied().unwrap_or(0));
            let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for k in 0..=chunk.len() {
                s.push(char::from(REST_ALPHABET[(v >> (18 - 6 * k) & 63) as usize]));
            }
            if form == BASE64_PADDED {
                s.extend(std::iter::repeat_n('=', 3 - chunk.len()));
            }
        }
        s
    }

    fn assert_agrees_with_the_references(id: &str) {
        let (form, bytes) = compact_reference(id);
        let mut out = vec![7u8];
        assert_eq!(compact_into(id, &mut out), form, "{id}");
        assert_eq!(&out[1..], bytes.as_slice(), "{id}");
        let mut room = vec![0u8; id.len()];
        assert_eq!(compact_to(id, &mut room), Some((form, bytes.len())), "{id}");
        assert_eq!(&room[..bytes.len()], bytes.as_slice(), "{id}");
        if form != RAW {
            assert_eq!(expand(form, &bytes), Some(expand_reference(form, &bytes)));
        }
    }

    #[test]
    fn chunked_codec_agrees_with_the_bit_at_a_time_one() {
        let alphabet = b"ABab09_-=+/";
        for n in 0..20_000u64 {
            let len = (n % 23) as usize;
            let s: String = bytes(n, len)
                .iter()
                .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
                .collect();
            assert_agrees_with_the_references(&s);
        }
        for len in 0..40 {
            let b = bytes(len as u64, len);
            for form in [BASE64, BASE64_PADDED] {
                let text = expand_reference(form, &b);
                assert_eq!(expand(form, &b).as_deref(), Some(text.as_str()));
                assert_agrees_with_the_references(&text);
            }
        }
        assert_eq!(compact_to("AAAA", &mut [0u8; 2]), None);
    }

    proptest::proptest! {
        #[test]
        fn chunked_codec_agrees_on_any_text(
            id in "[A-Za-z0-9_=+/-]{0,200}|\\PC{0,40}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            assert_agrees_with_the_references(&id);
            for form in [BASE64, BASE64_PADDED] {
                let text = expand_reference(form, &bytes);
                proptest::prop_assert_eq!(expand(form, &bytes), Some(text.clone()));
                assert_agrees_with_the_references(&text);
            }
        }
    }

    /// A candidate's cache key, made from classify's decoding, is exactly what compacting
    /// its `lookup` text gives; IDs without one are compacted at look-up.
    fn assert_key_is_the_compacted_lookup(id: &str) {
        let sources = [
            crate::config::SourceType::RestId,
            crate::config::SourceType::EwsId,
            crate::config::SourceType::EntryId,
        ];
        let Some(candidate) = crate::id_rewrite::candidate_for(id, &sources) else {
            return;
        };
        let mut room = vec![0u8; candidate.lookup.len()];
        let (form, len) = compact_to(&candidate.lookup, &mut room).expect("room enough");
        match candidate.cache_key() {
            Some(key) => {
                assert_eq!((key.form(), key.bytes()), (form, &room[..len]), "{id}");
            }
            None => assert!(
                candidate.format == crate::exchange_id::IdFormat::EntryId || len > INLINE_KEY_LEN,
                "{id}"
            ),
        }
    }

    #[test]
    fn candidate_keys_are_the_compacted_lookup() {
        use crate::exchange_id::{ews_to_rest, rest_to_ews};
        use crate::id_samples::*;
        for sample in [
            REST_MSG,
            REST_RLE_MSG,
            EWS_MSG_SEARCH,
            ENTRYID,
            REST_FOLDER,
            REST_OCC,
            CONV,
            IMM,
        ] {
            for id in [sample.to_owned(), ews_to_rest(sample), rest_to_ews(sample)] {
                assert_key_is_the_compacted_lookup(&id);
            }
        }
        // Regular item IDs as the simulator encodes them, in both alphabets.
        for n in 0..64 {
            let keys = crate::sim::ids::MailboxKeys {
                mailbox_guid: *b"compact-mailbox1",
                store_uid: *b"compact-storeuid",
                db_guid: *b"compact-database",
            };
            let rest = crate::sim::ids::to_rest(&crate::sim::ids::regular_item_id(&keys, 1, n));
            assert_key_is_the_compacted_lookup(&rest);
            assert_key_is_the_compacted_lookup(&rest_to_ews(&rest));
        }
    }

    proptest::proptest! {
        #[test]
        fn candidate_keys_agree_on_any_message_id(
            guid in proptest::array::uniform16(proptest::num::u8::ANY),
            folder in proptest::num::u64::ANY,
            item in proptest::num::u64::ANY,
        ) {
            let keys = crate::sim::ids::MailboxKeys {
                mailbox_guid: guid,
                store_uid: *b"compact-storeuid",
                db_guid: *b"compact-database",
            };
            let rest = crate::sim::ids::to_rest(&crate::sim::ids::regular_item_id(&keys, folder, item));
            assert_key_is_the_compacted_lookup(&rest);
            assert_key_is_the_compacted_lookup(&crate::exchange_id::rest_to_ews(&rest));
        }
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
