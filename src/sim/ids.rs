//! Exchange IDs in the binary layouts Graph really uses (graph-facts.md section 2.4), so the
//! product's decoder is exercised against the same bytes it will meet in production.
//!
//! Encodes and decodes only; it knows nothing about which items exist (that is the store's
//! job) and never guesses a format from a prefix: a string either decodes exactly or is `None`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Provider UID of every immutable entry (`1D840311-AA66-11CD-9BC8-00AA002FC45A`).
pub const IMMUTABLE_PROVIDER_UID: [u8; 16] = [
    0x1d, 0x84, 0x03, 0x11, 0xaa, 0x66, 0x11, 0xcd, 0x9b, 0xc8, 0x00, 0xaa, 0x00, 0x2f, 0xc4, 0x5a,
];

/// The fixed 36-character start of every `restImmutableEntryId`.
pub const IMMUTABLE_REST_PREFIX: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A";

const STORAGE_MAILBOX_ITEM: u8 = 3;
const STORAGE_CONVERSATION: u8 = 4;
const STORAGE_IMMUTABLE: u8 = 9;
const TYPE_PRIVATE_FOLDER: u16 = 0x0001;
const TYPE_PRIVATE_MESSAGE: u16 = 0x0007;
const TYPE_IMMUTABLE_ITEM: u16 = 0x000d;
const FOLDER_ENTRY_LEN: usize = 46;
const MESSAGE_ENTRY_LEN: usize = 70;
const MONIKER_LEN: usize = 36;
/// What follows the parent item's ID in an attachment ID (observed `01 12 00 10 00`).
const ATTACHMENT_MARKER: [u8; 5] = [0x01, 0x12, 0x00, 0x10, 0x00];
const CONVERSATION_INDEX_LEN: usize = 16;

/// The five `exchangeIdFormat` values of translateExchangeIds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdFormat {
    EntryId,
    EwsId,
    ImmutableEntryId,
    RestId,
    RestImmutableEntryId,
}

impl IdFormat {
    pub const ALL: [IdFormat; 5] = [
        IdFormat::EntryId,
        IdFormat::EwsId,
        IdFormat::ImmutableEntryId,
        IdFormat::RestId,
        IdFormat::RestImmutableEntryId,
    ];

    /// Graph's enum names; matched case-insensitively because OData enum members are.
    pub fn parse(name: &str) -> Option<IdFormat> {
        IdFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdFormat::EntryId => "entryId",
            IdFormat::EwsId => "ewsId",
            IdFormat::ImmutableEntryId => "immutableEntryId",
            IdFormat::RestId => "restId",
            IdFormat::RestImmutableEntryId => "restImmutableEntryId",
        }
    }
}

/// The GUIDs that place an ID in one mailbox: the moniker (mailbox GUID, in text form inside
/// regular IDs), the MAPI store UID of its entry IDs, and the replica GUID of its global IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxKeys {
    pub mailbox_guid: [u8; 16],
    pub store_uid: [u8; 16],
    pub db_guid: [u8; 16],
}

/// A MAPI global identifier: replica GUID plus a 6-byte big-endian counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlobalId {
    pub db_guid: [u8; 16],
    pub counter: u64,
}

/// What a regular (type 3) item ID names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegularItem {
    pub mailbox_guid: [u8; 16],
    pub store_uid: [u8; 16],
    pub folder: GlobalId,
    pub item: GlobalId,
}

/// Every ID shape the simulator hands out, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeId {
    Item(RegularItem),
    Attachment(RegularItem, [u8; 16]),
    Folder {
        mailbox_guid: [u8; 16],
        store_uid: [u8; 16],
        folder: GlobalId,
    },
    ImmutableItem(GlobalId),
    ImmutableAttachment(GlobalId, [u8; 16]),
    Conversation {
        mailbox_guid: [u8; 16],
        index: [u8; 16],
    },
}

fn push_global_id(out: &mut Vec<u8>, id: GlobalId) {
    out.extend_from_slice(&id.db_guid);
    // Six bytes: the low 48 bits of the counter, most significant first.
    out.extend_from_slice(&id.counter.to_be_bytes()[2..]);
    out.extend_from_slice(&[0, 0]);
}

fn entry_header(out: &mut Vec<u8>, provider: &[u8; 16], object_type: u16) {
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(provider);
    out.extend_from_slice(&object_type.to_le_bytes());
}

/// The 46-byte MAPI folder entry ID.
pub fn folder_entry(keys: &MailboxKeys, folder_counter: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FOLDER_ENTRY_LEN);
    entry_header(&mut out, &keys.store_uid, TYPE_PRIVATE_FOLDER);
    push_global_id(&mut out, global(keys, folder_counter));
    out
}

/// The 70-byte MAPI message entry ID: folder global ID, then the item's.
pub fn message_entry(keys: &MailboxKeys, folder_counter: u64, item_counter: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(MESSAGE_ENTRY_LEN);
    entry_header(&mut out, &keys.store_uid, TYPE_PRIVATE_MESSAGE);
    push_global_id(&mut out, global(keys, folder_counter));
    push_global_id(&mut out, global(keys, item_counter));
    out
}

/// The 46-byte immutable entry: constant provider UID, type `0x000d`, one global ID.
pub fn immutable_entry(keys: &MailboxKeys, immutable_counter: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FOLDER_ENTRY_LEN);
    entry_header(&mut out, &IMMUTABLE_PROVIDER_UID, TYPE_IMMUTABLE_ITEM);
    push_global_id(&mut out, global(keys, immutable_counter));
    out
}

fn global(keys: &MailboxKeys, counter: u64) -> GlobalId {
    GlobalId {
        db_guid: keys.db_guid,
        counter,
    }
}

fn moniker_header(out: &mut Vec<u8>, storage_type: u8, mailbox_guid: &[u8; 16]) {
    out.extend_from_slice(&[0, storage_type]);
    out.extend_from_slice(&(MONIKER_LEN as u16).to_le_bytes());
    let text = uuid::Uuid::from_bytes(*mailbox_guid)
        .hyphenated()
        .to_string();
    out.extend_from_slice(text.as_bytes());
    // IdProcessingInstruction: Normal.
    out.push(0);
}

fn with_store_id(mut out: Vec<u8>, store_id: &[u8]) -> Vec<u8> {
    // Store IDs here are 16, 46 or 70 bytes, so the length always fits in a u16.
    out.extend_from_slice(&(store_id.len() as u16).to_le_bytes());
    out.extend_from_slice(store_id);
    out
}

/// A regular folder ID: 89 bytes, 120 REST characters.
pub fn regular_folder_id(keys: &MailboxKeys, folder_counter: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(89);
    moniker_header(&mut out, STORAGE_MAILBOX_ITEM, &keys.mailbox_guid);
    with_store_id(out, &folder_entry(keys, folder_counter))
}

/// A regular item ID: 113 bytes, 152 REST characters ending in one `=`.
pub fn regular_item_id(keys: &MailboxKeys, folder_counter: u64, item_counter: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(113);
    moniker_header(&mut out, STORAGE_MAILBOX_ITEM, &keys.mailbox_guid);
    with_store_id(out, &message_entry(keys, folder_counter, item_counter))
}

/// An immutable item ID: 51 bytes, 68 REST characters, no padding.
pub fn immutable_item_id(keys: &MailboxKeys, immutable_counter: u64) -> Vec<u8> {
    with_store_id(
        vec![0, STORAGE_IMMUTABLE, 0],
        &immutable_entry(keys, immutable_counter),
    )
}

/// A conversation ID: storage type 4 and a 16-byte conversation index.
pub fn conversation_id(keys: &MailboxKeys, index: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(59);
    moniker_header(&mut out, STORAGE_CONVERSATION, &keys.mailbox_guid);
    with_store_id(out, index)
}

/// An attachment ID: the parent item's ID (regular or immutable) plus the attachment key.
pub fn attachment_id(parent_item_id: &[u8], key: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent_item_id.len() + ATTACHMENT_MARKER.len() + 16);
    out.extend_from_slice(parent_item_id);
    out.extend_from_slice(&ATTACHMENT_MARKER);
    out.extend_from_slice(key);
    out
}

/// REST alphabet: standard base64 with `/`->`-` and `+`->`_`, `=` padding kept.
pub fn to_rest(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '/' => '-',
            '+' => '_',
            other => other,
        })
        .collect()
}

/// EWS form: plain standard base64.
pub fn to_ews(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Graph's binary formats: RFC 4648 URL-safe base64, padding removed and counted in a digit.
pub fn to_binary(bytes: &[u8]) -> String {
    let mut text = URL_SAFE_NO_PAD.encode(bytes);
    let padding = (3 - bytes.len() % 3) % 3;
    text.push(char::from(b'0' + padding as u8));
    text
}

pub fn from_rest(text: &str) -> Option<Vec<u8>> {
    if text.contains(['+', '/']) {
        return None;
    }
    let swapped: String = text
        .chars()
        .map(|c| match c {
            '-' => '/',
            '_' => '+',
            other => other,
        })
        .collect();
    STANDARD.decode(swapped).ok()
}

pub fn from_ews(text: &str) -> Option<Vec<u8>> {
    if text.contains(['-', '_']) {
        return None;
    }
    STANDARD.decode(text).ok()
}

pub fn from_binary(text: &str) -> Option<Vec<u8>> {
    let (body, digit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    let padding = match digit {
        "0" => 0,
        "1" => 1,
        "2" => 2,
        _ => return None,
    };
    let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
    ((3 - bytes.len() % 3) % 3 == padding).then_some(bytes)
}

/// Decodes the bytes of a regular, immutable, attachment or conversation ID.
pub fn parse_id_bytes(bytes: &[u8]) -> Option<ExchangeId> {
    let (&compression, rest) = bytes.split_first()?;
    match compression {
        0 => parse_payload(rest),
        1 => parse_payload(&rle_decompress(rest)?),
        _ => None,
    }
}

/// MS-OXCEXT run-length scheme: a byte written twice is followed by (run length - 2).
fn rle_decompress(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut at = 0;
    while let Some(&byte) = input.get(at) {
        if input.get(at + 1) == Some(&byte) {
            let extra = *input.get(at + 2)?;
            out.extend(std::iter::repeat_n(byte, usize::from(extra) + 2));
            at += 3;
        } else {
            out.push(byte);
            at += 1;
        }
    }
    Some(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.bytes.split_at_checked(n)?;
        self.bytes = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16_le(&mut self) -> Option<u16> {
        let two = self.take(2)?;
        Some(u16::from_le_bytes([two[0], two[1]]))
    }

    fn array16(&mut self) -> Option<[u8; 16]> {
        self.take(16)?.try_into().ok()
    }
}

fn parse_payload(payload: &[u8]) -> Option<ExchangeId> {
    let mut reader = Reader { bytes: payload };
    match reader.byte()? {
        STORAGE_IMMUTABLE => {
            if reader.byte()? != 0 || usize::from(reader.u16_le()?) != FOLDER_ENTRY_LEN {
                return None;
            }
            let item = parse_immutable_entry(reader.take(FOLDER_ENTRY_LEN)?)?;
            match attachment_suffix(reader.bytes)? {
                None => Some(ExchangeId::ImmutableItem(item)),
                Some(key) => Some(ExchangeId::ImmutableAttachment(item, key)),
            }
        }
        storage @ (STORAGE_MAILBOX_ITEM | STORAGE_CONVERSATION) => {
            if usize::from(reader.u16_le()?) != MONIKER_LEN {
                return None;
            }
            let moniker = std::str::from_utf8(reader.take(MONIKER_LEN)?).ok()?;
            let mailbox_guid = *uuid::Uuid::try_parse(moniker).ok()?.as_bytes();
            if reader.byte()? != 0 {
                // Occurrences and other processing instructions are never handed out here.
                return None;
            }
            let store_len = usize::from(reader.u16_le()?);
            let store_id = reader.take(store_len)?;
            if storage == STORAGE_CONVERSATION {
                if store_len != CONVERSATION_INDEX_LEN {
                    return None;
                }
                let index = store_id.try_into().ok()?;
                return reader.bytes.is_empty().then_some(ExchangeId::Conversation {
                    mailbox_guid,
                    index,
                });
            }
            match store_len {
                FOLDER_ENTRY_LEN if reader.bytes.is_empty() => {
                    let (store_uid, folder) = parse_folder_entry(store_id)?;
                    Some(ExchangeId::Folder {
                        mailbox_guid,
                        store_uid,
                        folder,
                    })
                }
                MESSAGE_ENTRY_LEN => {
                    let (store_uid, folder, item) = parse_message_entry(store_id)?;
                    let regular = RegularItem {
                        mailbox_guid,
                        store_uid,
                        folder,
                        item,
                    };
                    match attachment_suffix(reader.bytes)? {
                        None => Some(ExchangeId::Item(regular)),
                        Some(key) => Some(ExchangeId::Attachment(regular, key)),
                    }
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `Some(None)`: nothing follows; `Some(Some(key))`: an attachment; `None`: trailing junk.
fn attachment_suffix(rest: &[u8]) -> Option<Option<[u8; 16]>> {
    if rest.is_empty() {
        return Some(None);
    }
    let (marker, key) = rest.split_at_checked(ATTACHMENT_MARKER.len())?;
    if marker != ATTACHMENT_MARKER {
        return None;
    }
    Some(Some(key.try_into().ok()?))
}

fn parse_global_id(reader: &mut Reader<'_>) -> Option<GlobalId> {
    let db_guid = reader.array16()?;
    let six = reader.take(6)?;
    let mut eight = [0u8; 8];
    eight[2..].copy_from_slice(six);
    if reader.take(2)? != [0, 0] {
        return None;
    }
    Some(GlobalId {
        db_guid,
        counter: u64::from_be_bytes(eight),
    })
}

fn parse_entry_header(reader: &mut Reader<'_>, object_type: u16) -> Option<[u8; 16]> {
    if reader.take(4)? != [0, 0, 0, 0] {
        return None;
    }
    let provider = reader.array16()?;
    (reader.u16_le()? == object_type).then_some(provider)
}

pub fn parse_folder_entry(entry: &[u8]) -> Option<([u8; 16], GlobalId)> {
    if entry.len() != FOLDER_ENTRY_LEN {
        return None;
    }
    let mut reader = Reader { bytes: entry };
    let store_uid = parse_entry_header(&mut reader, TYPE_PRIVATE_FOLDER)?;
    Some((store_uid, parse_global_id(&mut reader)?))
}

pub fn parse_message_entry(entry: &[u8]) -> Option<([u8; 16], GlobalId, GlobalId)> {
    if entry.len() != MESSAGE_ENTRY_LEN {
        return None;
    }
    let mut reader = Reader { bytes: entry };
    let store_uid = parse_entry_header(&mut reader, TYPE_PRIVATE_MESSAGE)?;
    let folder = parse_global_id(&mut reader)?;
    Some((store_uid, folder, parse_global_id(&mut reader)?))
}

pub fn parse_immutable_entry(entry: &[u8]) -> Option<GlobalId> {
    if entry.len() != FOLDER_ENTRY_LEN {
        return None;
    }
    let mut reader = Reader { bytes: entry };
    if parse_entry_header(&mut reader, TYPE_IMMUTABLE_ITEM)? != IMMUTABLE_PROVIDER_UID {
        return None;
    }
    parse_global_id(&mut reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_REST_MESSAGE: &str = "AAMkADgwNzM0ZDllLTVhYmItNDU2ZC1iMGI4LTFiOTAyOWQ2NDNlOQBGAAAAAADhDq91SSK4QIw9CuwFXFc0BwBmGstC9VnGQYyUCu1kIwJ2AAAAAAEMAABmGstC9VnGQYyUCu1kIwJ2AABM3JaPAAA=";
    const SAMPLE_REST_FOLDER: &str = "AAMkADliMmU5YjJlLTVmMmQtNGQzNS1iYjA0LTdmZTA2NTI0MTE5YwAuAAAAAADdOMUbUmCfTKa7OC-fqjkdAQBnu3olF7NfToRyJ2f__TNcAAAAAAESAAA=";
    const SAMPLE_REST_ATTACHMENT: &str = "AAMkADgwNzM0ZDllLTVhYmItNDU2ZC1iMGI4LTFiOTAyOWQ2NDNlOQBGAAAAAADhDq91SSK4QIw9CuwFXFc0BwBmGstC9VnGQYyUCu1kIwJ2AAAAAAEMAABmGstC9VnGQYyUCu1kIwJ2AABM3JaPAAABEgAQAGJ6k4vmrMtHpPlexQJvhS8=";
    const SAMPLE_IMMUTABLE: &str =
        "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AGnUPtcQC-Eiwmc39SmMpPgAAA8ZAfgAA";
    const SAMPLE_ENTRY_ID: &str = "AAAAACVPvW2DMzFPiUQTK8bGKT0HAOuc1aKZru1Ii46D0CAKhR8AAAAAAQwAAOuc1aKZru1Ii46D0CAKhR8AAKWjKs8AAA2";
    const SAMPLE_IMMUTABLE_ENTRY_ID: &str =
        "AAAAAB2EAxGqZhHNm8gAqgAvxFoNABp1D7XEAvxIsJnN_UpjKT4AAAPGQH4AAA2";
    const SAMPLE_RLE_MESSAGE: &str = "AQMkAGMwMAFhM2E2LWFiMGUtNDhkNC1iNWE0LTE4MzgwMWU2MzFlNwBGAAAD0tjtDdOkAkC_T7FP3oOb2gcA4QdUjomZfkS5W8iS_P3T8wAAAgENAAAA4QdUjomZfkS5W8iS_P3T8wABDDaZwgAAAA==";
    const SAMPLE_CONVERSATION: &str =
        "AAQkADdmODdhN2NjLTMwZWYtNDBiNy1iMDYxLWZhZTkyOGM4YmRhZAAQAKQ6a/rTEmVCtGMTER183jw=";

    fn hex16(text: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).unwrap();
        }
        out
    }

    /// The keys of the mailbox the Graph documentation's sample message lives in.
    fn sample_keys() -> MailboxKeys {
        MailboxKeys {
            mailbox_guid: *uuid::Uuid::parse_str("80734d9e-5abb-456d-b0b8-1b9029d643e9")
                .unwrap()
                .as_bytes(),
            store_uid: hex16("e10eaf754922b8408c3d0aec055c5734"),
            db_guid: hex16("661acb42f559c6418c940aed64230276"),
        }
    }

    #[test]
    fn encoder_reproduces_the_documented_message_id_byte_for_byte() {
        let bytes = regular_item_id(&sample_keys(), 0x010c, 0x4cdc968f);
        assert_eq!(bytes.len(), 113);
        assert_eq!(to_rest(&bytes), SAMPLE_REST_MESSAGE);
        assert_eq!(to_rest(&bytes).len(), 152);
    }

    #[test]
    fn encoder_reproduces_the_documented_attachment_id() {
        let parent = regular_item_id(&sample_keys(), 0x010c, 0x4cdc968f);
        let key = hex16("627a938be6accb47a4f95ec5026f852f");
        let bytes = attachment_id(&parent, &key);
        assert_eq!(bytes.len(), 134);
        assert_eq!(to_rest(&bytes), SAMPLE_REST_ATTACHMENT);
        assert_eq!(
            parse_id_bytes(&bytes),
            Some(ExchangeId::Attachment(
                RegularItem {
                    mailbox_guid: sample_keys().mailbox_guid,
                    store_uid: sample_keys().store_uid,
                    folder: GlobalId {
                        db_guid: sample_keys().db_guid,
                        counter: 0x010c
                    },
                    item: GlobalId {
                        db_guid: sample_keys().db_guid,
                        counter: 0x4cdc968f
                    },
                },
                key
            ))
        );
    }

    #[test]
    fn entry_id_is_bytes_43_to_112_of_the_rest_id_in_url_safe_base64_with_digit() {
        let keys = sample_keys();
        let entry = message_entry(&keys, 0x010c, 0x4cdc968f);
        let full = regular_item_id(&keys, 0x010c, 0x4cdc968f);
        assert_eq!(&full[43..], entry.as_slice());
        let text = to_binary(&entry);
        assert_eq!(text.len(), 95);
        assert!(text.starts_with("AAAAA") && text.ends_with('2'));
        assert_eq!(from_binary(&text), Some(entry));
    }

    #[test]
    fn documented_entry_id_sample_decodes_as_a_private_message_entry() {
        let bytes = from_binary(SAMPLE_ENTRY_ID).unwrap();
        let (store_uid, folder, item) = parse_message_entry(&bytes).unwrap();
        assert_eq!(store_uid, hex16("254fbd6d8333314f8944132bc6c6293d"));
        assert_eq!(folder.counter, 0x010c);
        assert_eq!(item.counter, 0xa5a32acf);
        assert_eq!(item.db_guid, hex16("eb9cd5a299aeed488b8e83d0200a851f"));
    }

    #[test]
    fn encoder_reproduces_the_immutable_samples_in_both_forms() {
        let keys = MailboxKeys {
            db_guid: hex16("1a750fb5c402fc48b099cdfd4a63293e"),
            ..sample_keys()
        };
        let rest = to_rest(&immutable_item_id(&keys, 0x03c6407e));
        assert_eq!(rest, SAMPLE_IMMUTABLE);
        assert_eq!(rest.len(), 68);
        assert!(rest.starts_with(IMMUTABLE_REST_PREFIX));
        let entry = to_binary(&immutable_entry(&keys, 0x03c6407e));
        assert_eq!(entry, SAMPLE_IMMUTABLE_ENTRY_ID);
        assert_eq!(
            parse_id_bytes(&from_rest(SAMPLE_IMMUTABLE).unwrap()),
            Some(ExchangeId::ImmutableItem(GlobalId {
                db_guid: keys.db_guid,
                counter: 0x03c6407e
            }))
        );
    }

    #[test]
    fn documented_folder_id_decodes_as_a_46_byte_folder() {
        let bytes = from_rest(SAMPLE_REST_FOLDER).unwrap();
        assert_eq!(bytes.len(), 89);
        let Some(ExchangeId::Folder { folder, .. }) = parse_id_bytes(&bytes) else {
            panic!("not a folder");
        };
        assert_eq!(folder.counter, 0x0112);
        let keys = MailboxKeys {
            mailbox_guid: *uuid::Uuid::parse_str("9b2e9b2e-5f2d-4d35-bb04-7fe06524119c")
                .unwrap()
                .as_bytes(),
            store_uid: hex16("dd38c51b52609f4ca6bb382fdfaa391d"),
            db_guid: hex16("67bb7a2517b35f4e84722767fef9335c"),
        };
        assert_eq!(
            to_rest(&regular_folder_id(&keys, 0x0112)),
            SAMPLE_REST_FOLDER
        );
    }

    #[test]
    fn compressed_message_id_decompresses_to_a_regular_item() {
        let bytes = from_rest(SAMPLE_RLE_MESSAGE).unwrap();
        let Some(ExchangeId::Item(item)) = parse_id_bytes(&bytes) else {
            panic!("not an item");
        };
        assert_eq!(
            uuid::Uuid::from_bytes(item.mailbox_guid).to_string(),
            "c000a3a6-ab0e-48d4-b5a4-183801e631e7"
        );
    }

    #[test]
    fn conversation_id_round_trips_and_is_not_an_item() {
        let bytes = from_ews(SAMPLE_CONVERSATION).unwrap();
        let Some(ExchangeId::Conversation {
            mailbox_guid,
            index,
        }) = parse_id_bytes(&bytes)
        else {
            panic!("not a conversation");
        };
        let keys = MailboxKeys {
            mailbox_guid,
            ..sample_keys()
        };
        assert_eq!(to_ews(&conversation_id(&keys, &index)), SAMPLE_CONVERSATION);
    }

    #[test]
    fn rest_and_ews_alphabets_reject_each_others_characters() {
        assert_eq!(from_rest("AAAA/AAA"), None);
        assert_eq!(from_ews("AAAA-AAA"), None);
        let ews = to_ews(&regular_item_id(&sample_keys(), 1, 0xfbff));
        let rest = to_rest(&regular_item_id(&sample_keys(), 1, 0xfbff));
        assert_eq!(from_ews(&ews), from_rest(&rest));
    }

    #[test]
    fn binary_form_with_a_wrong_padding_digit_is_rejected() {
        let wrong = SAMPLE_ENTRY_ID.replace("AAA2", "AAA1");
        assert_eq!(from_binary(&wrong), None);
        assert_eq!(from_binary(""), None);
        assert_eq!(from_binary("AAAAAA=="), None);
    }

    #[test]
    fn junk_and_truncated_bytes_do_not_decode() {
        let full = regular_item_id(&sample_keys(), 1, 2);
        for cut in 0..full.len() {
            assert_eq!(parse_id_bytes(&full[..cut]), None, "cut at {cut}");
        }
        let mut trailing = full.clone();
        trailing.push(7);
        assert_eq!(parse_id_bytes(&trailing), None);
        assert_eq!(parse_id_bytes(&[2, 3, 4]), None);
        assert_eq!(parse_id_bytes(&[1, 5, 5]), None);
    }

    #[test]
    fn format_names_parse_case_insensitively() {
        assert_eq!(
            IdFormat::parse("RESTIMMUTABLEENTRYID"),
            Some(IdFormat::RestImmutableEntryId)
        );
        assert_eq!(IdFormat::parse("hexEntryId"), None);
        for format in IdFormat::ALL {
            assert_eq!(IdFormat::parse(format.as_str()), Some(format));
        }
    }
}
