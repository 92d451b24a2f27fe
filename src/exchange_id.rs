//! Decoding classifier for Outlook/Exchange IDs (graph-facts.md section 2.5).
//!
//! `classify` decides whether a string is an Exchange ID by decoding it and checking the
//! whole binary layout: compression byte, storage type, mailbox GUID moniker, processing
//! instruction, StoreId length, the MAPI entry ID inside, and exact lengths and padding.
//! It must never guess from a prefix or a length alone: a false positive makes the proxy
//! replace a value the client meant literally, which corrupts the request. Anything that
//! does not decode cleanly is `None` and is left alone.
//!
//! It runs on every JSON string of a rewritten body, so it rejects cheaply first (length,
//! first character), decodes into stack buffers and allocates nothing (the mailbox GUID is
//! kept inline). It does no I/O and never panics. Callers percent-decode and strip
//! OData key syntax first (`id_in_path_segment` does that for URL path segments).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Shortest string worth decoding: the smallest accepted ID (a 63-character folder
/// `entryId`) is well above this, while GUIDs (36) and most words are below it.
const MIN_ID_LEN: usize = 40;
/// The EWS `Id` attribute is capped at 512 characters (MS-OXWSCORE 2.2.4.25); 700 leaves
/// room for attachment IDs without letting huge strings reach the decoder.
const MAX_ID_LEN: usize = 700;
/// A 700-character base64 string holds at most 525 bytes.
pub const MAX_DECODED_LEN: usize = MAX_ID_LEN / 4 * 3;
/// The reverse-engineered EWS ID format caps the decompressed payload at 1024 bytes; it
/// also bounds what a hostile RLE stream can expand to.
const MAX_PAYLOAD_LEN: usize = 1024;
/// A path segment may be percent-encoded (3 characters per byte) and wrapped in
/// `name('...')`, so it can be longer than the ID it carries.
const MAX_SEGMENT_LEN: usize = MAX_ID_LEN * 3 + 64;

/// The fixed first 36 characters of every observed REST immutable ID. They encode exactly
/// the first 27 bytes: `00 09 00 2e 00`, zero flags, the immutable provider UID and type `0d 00`.
const IMMUTABLE_REST_PREFIX: &str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A";
/// 51 bytes, a multiple of 3, hence no padding.
const IMMUTABLE_REST_LEN: usize = 68;
const IMMUTABLE_REST_BYTES: usize = 51;
/// Provider UID `1D840311-AA66-11CD-9BC8-00AA002FC45A` found in every immutable entry ID.
const IMMUTABLE_PROVIDER_UID: [u8; 16] = [
    0x1d, 0x84, 0x03, 0x11, 0xaa, 0x66, 0x11, 0xcd, 0x9b, 0xc8, 0x00, 0xaa, 0x00, 0x2f, 0xc4, 0x5a,
];

/// MAPI folder entry ID: flags(4) + provider UID(16) + type(2) + GUID(16) + counter(6) + pad(2).
const FOLDER_ENTRY_LEN: usize = 46;
/// MAPI message entry ID: the folder part plus the message GUID(16) + counter(6) + pad(2).
const MESSAGE_ENTRY_LEN: usize = 70;
/// Occurrence StoreId: `08`, 8-byte date, `46`, 70-byte message entry ID, `10`.
const OCCURRENCE_STORE_LEN: usize = 81;
const OCCURRENCE_MARKER: u8 = 0x08;
const OCCURRENCE_END: u8 = 0x10;
/// Entry IDs as text: 70 bytes give 94 base64 characters plus the padding digit, 46 give 62 + 1.
const MESSAGE_ENTRY_ID_TEXT_LEN: usize = 95;
const FOLDER_ENTRY_ID_TEXT_LEN: usize = 63;
/// Hex entry IDs: two characters per byte.
const MESSAGE_HEX_LEN: usize = MESSAGE_ENTRY_LEN * 2;
const FOLDER_HEX_LEN: usize = FOLDER_ENTRY_LEN * 2;

/// MAPI object types at bytes 20..22 of an entry ID (MS-OXCDATA).
const TYPE_PRIVATE_FOLDER: u16 = 0x0001;
const TYPE_PUBLIC_FOLDER: u16 = 0x0003;
const TYPE_PRIVATE_MESSAGE: u16 = 0x0007;
const TYPE_PUBLIC_MESSAGE: u16 = 0x0009;
const TYPE_IMMUTABLE_MESSAGE: u16 = 0x000d;

/// IdStorageType values that this classifier understands.
const STORAGE_MAILBOX: u8 = 3;
const STORAGE_CONVERSATION: u8 = 4;
const STORAGE_MAILBOX_WITH_FALLBACK: u8 = 6;
/// IdProcessingInstruction values.
const INSTRUCTION_NORMAL: u8 = 0;
const INSTRUCTION_RECURRENCE: u8 = 1;
/// Conversation IDs carry the 16-byte PidTagConversationId.
const CONVERSATION_STORE_LEN: usize = 16;
/// Length of a GUID in "D" text form, the only moniker length accepted.
const GUID_TEXT_LEN: usize = 36;

const NOT_BASE64: u8 = 0xff;

/// Builds a base64 decode table for an alphabet that differs from RFC 4648 only in the
/// characters for values 62 and 63.
const fn decode_table(char_62: u8, char_63: u8) -> [u8; 256] {
    let mut table = [NOT_BASE64; 256];
    let mut i = 0u8;
    while i < 26 {
        table[(b'A' + i) as usize] = i;
        table[(b'a' + i) as usize] = 26 + i;
        i += 1;
    }
    let mut d = 0u8;
    while d < 10 {
        table[(b'0' + d) as usize] = 52 + d;
        d += 1;
    }
    table[char_62 as usize] = 62;
    table[char_63 as usize] = 63;
    table
}

/// A decode table (a character's sextet in the low six bits, flags in the top two) and the
/// same table spread out for decoding four characters at a time: `wide[k][c]` is the
/// sextet of `c` already shifted to position `k` of a 24-bit group, with the entry's flags
/// in the top byte. ORing the four entries of a group gives its three bytes in the low 24
/// bits and the group's flags above them: four table loads and three ORs per group instead
/// of masking and shifting every sextet.
struct Alphabet {
    table: [u8; 256],
    wide: [[u32; 256]; 4],
}

const fn alphabet(table: [u8; 256]) -> Alphabet {
    let mut wide = [[0u32; 256]; 4];
    let mut c = 0;
    while c < 256 {
        let sextet = (table[c] & 63) as u32;
        let flags = ((table[c] & FLAGS) as u32) << 24;
        wide[0][c] = (sextet << 18) | flags;
        wide[1][c] = (sextet << 12) | flags;
        wide[2][c] = (sextet << 6) | flags;
        wide[3][c] = sextet | flags;
        c += 1;
    }
    Alphabet { table, wide }
}

/// Graph's REST alphabet swaps the RFC 4648 URL-safe pair: `_` is 62 (`+`), `-` is 63 (`/`)
/// (graph-facts.md 2.3, verified by decoding occurrence dates).
static REST_TABLE: Alphabet = alphabet(decode_table(b'_', b'-'));
/// EWS IDs are standard base64.
static EWS_TABLE: Alphabet = alphabet(decode_table(b'+', b'/'));
/// Graph's binary formats (entryId, immutableEntryId) are documented as RFC 4648 URL-safe.
static URL_SAFE_TABLE: Alphabet = alphabet(decode_table(b'-', b'_'));

/// Flag bits of a `MAILBOX_TABLE` entry (the top two; the sextet is in the low six).
const REST_ONLY: u8 = 0x40;
const EWS_ONLY: u8 = 0x80;
const FLAGS: u8 = REST_ONLY | EWS_ONLY;

/// REST and EWS IDs in one table, so that one pass both decodes and tells the alphabet:
/// the two alphabets give `-` and `/` the same value (63), and `_` and `+` (62), and
/// differ in nothing else. A character of only one alphabet carries that alphabet's flag;
/// one outside both (`NOT_BASE64`) carries both flags, like a mix of the two alphabets,
/// and either way the string is not an ID.
static MAILBOX_TABLE: Alphabet = alphabet({
    let mut table = decode_table(b'_', b'-');
    table[b'-' as usize] = 63 | REST_ONLY;
    table[b'_' as usize] = 62 | REST_ONLY;
    table[b'/' as usize] = 63 | EWS_ONLY;
    table[b'+' as usize] = 62 | EWS_ONLY;
    table
});

/// Which of Graph's `exchangeIdFormat` encodings (plus two non-Graph forms) an ID is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdFormat {
    /// Regular Graph ID: EWS bytes in the REST alphabet, `=` padding kept.
    RestId,
    /// Regular EWS ID: standard base64, same bytes as `RestId`.
    EwsId,
    /// MAPI entry ID, URL-safe base64 with a trailing padding digit.
    EntryId,
    /// Immutable MAPI entry ID in the same encoding as `EntryId`.
    ImmutableEntryId,
    /// What `Prefer: IdType="ImmutableId"` returns.
    RestImmutableEntryId,
    /// A conversation ID (storage type 4), in either alphabet. Not an `exchangeIdFormat`.
    ConversationId,
    /// Hex of `PR_ENTRYID` (Outlook VBA, EWS `HexEntryId`). Not an `exchangeIdFormat`:
    /// convert it with `hex_entry_id_to_entry_id` first.
    HexEntryId,
}

impl IdFormat {
    /// The name Graph uses for this format, e.g. as `sourceIdType`. Only meaningful for
    /// translateExchangeIds when `is_graph_exchange_id_format` holds; the other two are
    /// descriptive names for logs.
    pub fn graph_name(&self) -> &'static str {
        match self {
            IdFormat::RestId => "restId",
            IdFormat::EwsId => "ewsId",
            IdFormat::EntryId => "entryId",
            IdFormat::ImmutableEntryId => "immutableEntryId",
            IdFormat::RestImmutableEntryId => "restImmutableEntryId",
            IdFormat::ConversationId => "conversationId",
            IdFormat::HexEntryId => "hexEntryId",
        }
    }

    /// Whether `graph_name` is a value of Graph's `exchangeIdFormat` enum.
    pub fn is_graph_exchange_id_format(&self) -> bool {
        match self {
            IdFormat::RestId
            | IdFormat::EwsId
            | IdFormat::EntryId
            | IdFormat::ImmutableEntryId
            | IdFormat::RestImmutableEntryId => true,
            IdFormat::ConversationId | IdFormat::HexEntryId => false,
        }
    }
}

/// What the ID names. Events, contacts and tasks are all MAPI messages, so they are `Item`;
/// only the URL or JSON context tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Item,
    /// Mail folder, calendar, contact folder, To Do list: no immutable form exists.
    Folder,
    Attachment,
    /// One instance of a recurring series.
    Occurrence,
    Conversation,
}

/// The result of decoding an Exchange ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExchangeId {
    pub format: IdFormat,
    pub kind: IdKind,
    /// The mailbox GUID from the moniker, lower-case "D" form; used to group
    /// translateExchangeIds calls by mailbox. `None` for formats without a moniker.
    pub mailbox_guid: Option<MailboxGuid>,
}

/// A mailbox GUID in lower-case "D" text form (8-4-4-4-12 hex digits), held inline:
/// `classify` runs on every ID of a rewritten body, and a heap string per ID was a
/// measurable share of the rewrite path.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MailboxGuid([u8; GUID_TEXT_LEN]);

impl MailboxGuid {
    /// `text` lower-cased when it is a "D" form GUID (either case), else `None`.
    pub fn parse(text: &str) -> Option<MailboxGuid> {
        MailboxGuid::from_moniker(text.as_bytes())
    }

    fn from_moniker(moniker: &[u8]) -> Option<MailboxGuid> {
        let bytes: [u8; GUID_TEXT_LEN] = moniker.try_into().ok()?;
        // Setting bit 5 lower-cases `A`-`F` and leaves digits and `-` as they are.
        is_guid_text(&bytes).then(|| MailboxGuid(bytes.map(|c| c | 0x20)))
    }

    pub fn as_str(&self) -> &str {
        // Only hex digits and `-` are ever stored (`parse`), so this is always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for MailboxGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MailboxGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ExchangeId {
    /// Whether translateExchangeIds should be asked for this ID's immutable form. Attachments
    /// and occurrences are left out until it is confirmed that Graph accepts them.
    pub fn is_translatable(&self) -> bool {
        self.kind == IdKind::Item
            && matches!(
                self.format,
                IdFormat::RestId | IdFormat::EwsId | IdFormat::EntryId
            )
    }
}

/// Classify one already percent-decoded, unquoted string. `None` means it is not an Exchange
/// ID: GUIDs, UPNs, change keys, random base64, anything that does not decode cleanly with
/// exact lengths and padding.
pub fn classify(s: &str) -> Option<ExchangeId> {
    match classify_other_forms(s) {
        Prefiltered::Settled(id) => id,
        Prefiltered::MailboxId => {
            let mut decoded = [0u8; MAX_DECODED_LEN];
            classify_mailbox_id(s.as_bytes(), &mut decoded).map(|(id, _)| id)
        }
    }
}

/// Room for what the longest text `classify` decodes as a REST or EWS ID holds.
pub type DecodeBuffer = [u8; MAX_DECODED_LEN];

/// What a REST or EWS ID's text decoded to, as `classify_keeping_bytes` hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxIdBytes<'d> {
    /// The strict base64 decoding of the text, before decompression.
    pub bytes: &'d [u8],
    /// Whether the text ended in `=` padding.
    pub padded: bool,
}

/// `classify`, plus for a REST or EWS ID the bytes its text decoded to: the ID cache keys
/// REST IDs by exactly those bytes, so a caller that looks the ID up next does not decode
/// it a second time. `scratch` is only written, never read, so one buffer can serve every
/// call (zeroing a fresh one per string would cost more than most rejections).
pub fn classify_keeping_bytes<'d>(
    s: &str,
    scratch: &'d mut DecodeBuffer,
) -> Option<(ExchangeId, Option<MailboxIdBytes<'d>>)> {
    match classify_other_forms(s) {
        Prefiltered::Settled(id) => id.map(|id| (id, None)),
        Prefiltered::MailboxId => {
            let (id, len) = classify_mailbox_id(s.as_bytes(), scratch)?;
            let bytes = MailboxIdBytes {
                bytes: scratch.get(..len)?,
                padded: s.ends_with('='),
            };
            Some((id, Some(bytes)))
        }
    }
}

/// Where the cheap checks of `classify` leave a string.
enum Prefiltered {
    /// Rejected, or classified as one of the forms without a mailbox moniker.
    Settled(Option<ExchangeId>),
    /// Only a REST or EWS ID (or a conversation ID) is still possible: decode it.
    MailboxId,
}

fn classify_other_forms(s: &str) -> Prefiltered {
    let text = s.as_bytes();
    if text.len() < MIN_ID_LEN || text.len() > MAX_ID_LEN {
        return Prefiltered::Settled(None);
    }
    // Every accepted form starts with a zero sextet: the compression byte of a REST/EWS ID
    // is 0 or 1, the flags of an entry ID are zero, and a hex entry ID starts with "00".
    match text.first() {
        Some(b'A') => {}
        Some(b'0') => return Prefiltered::Settled(classify_hex_entry_id(text)),
        _ => return Prefiltered::Settled(None),
    }
    if text.len() == IMMUTABLE_REST_LEN && s.starts_with(IMMUTABLE_REST_PREFIX) {
        return Prefiltered::Settled(classify_rest_immutable(text));
    }
    // Five zero sextets mean a zero second byte, i.e. storage type 0 for a REST/EWS ID,
    // which is not accepted; so only the binary formats can start this way.
    if text.starts_with(b"AAAAA") {
        return Prefiltered::Settled(classify_entry_id(text));
    }
    Prefiltered::MailboxId
}

/// Regular REST or EWS IDs and conversation IDs: decode into `decoded`, decompress, parse
/// the layout. Also returns how many bytes of `decoded` the text filled.
fn classify_mailbox_id(text: &[u8], decoded: &mut DecodeBuffer) -> Option<(ExchangeId, usize)> {
    let (len, flags) = decode_padded_flagged(text, &MAILBOX_TABLE, decoded)?;
    // A string with none of the four alphabet-specific characters is valid in both
    // alphabets and decodes to the same bytes; it is reported as RestId because that is the
    // form Graph returns. Both flags: the alphabets are mixed, or a character is in neither.
    let format = match flags {
        EWS_ONLY => IdFormat::EwsId,
        0 | REST_ONLY => IdFormat::RestId,
        _ => return None,
    };
    Some((classify_mailbox_bytes(format, decoded.get(..len)?)?, len))
}

/// The decoded bytes of a REST or EWS ID (`format` says which alphabet they came in).
fn classify_mailbox_bytes(format: IdFormat, bytes: &[u8]) -> Option<ExchangeId> {
    let (&compression, rest) = bytes.split_first()?;
    // Only compressed IDs pay for zeroing the expansion buffer.
    let mut expanded: [u8; MAX_PAYLOAD_LEN];
    let payload = match compression {
        0 => rest,
        1 => {
            expanded = [0u8; MAX_PAYLOAD_LEN];
            decompress_rle(rest, &mut expanded)?
        }
        _ => return None,
    };
    let parsed = parse_mailbox_payload(payload)?;
    let format = if parsed.kind == IdKind::Conversation {
        IdFormat::ConversationId
    } else {
        format
    };
    Some(ExchangeId {
        format,
        kind: parsed.kind,
        mailbox_guid: Some(parsed.moniker),
    })
}

struct MailboxPayload {
    kind: IdKind,
    moniker: MailboxGuid,
}

/// Parses a decompressed payload of storage type 3, 4 or 6 and insists that every byte is
/// accounted for.
fn parse_mailbox_payload(payload: &[u8]) -> Option<MailboxPayload> {
    let mut cursor = ByteCursor::new(payload);
    let storage = cursor.byte()?;
    let moniker = MailboxGuid::from_moniker(cursor.counted()?)?;
    let instruction = cursor.byte()?;
    let store = cursor.counted()?;
    let kind = match storage {
        STORAGE_CONVERSATION => {
            if instruction != INSTRUCTION_NORMAL || store.len() != CONVERSATION_STORE_LEN {
                return None;
            }
            if !cursor.is_empty() {
                return None;
            }
            IdKind::Conversation
        }
        STORAGE_MAILBOX | STORAGE_MAILBOX_WITH_FALLBACK => {
            let kind = store_kind(instruction, store)?;
            if storage == STORAGE_MAILBOX_WITH_FALLBACK {
                // Type 6 appends the item's InternetMessageId as counted UTF-8.
                let message_id = cursor.counted()?;
                if message_id.is_empty() || std::str::from_utf8(message_id).is_err() {
                    return None;
                }
            }
            // Whatever follows an item must be a complete attachment suffix.
            if cursor.is_empty() {
                kind
            } else if kind == IdKind::Item && is_attachment_suffix(cursor.rest()) {
                IdKind::Attachment
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(MailboxPayload { kind, moniker })
}

/// What a StoreId names, given the processing instruction before it. Series and
/// multiple-ID instructions are not understood and give `None`.
fn store_kind(instruction: u8, store: &[u8]) -> Option<IdKind> {
    match (instruction, store.len()) {
        (INSTRUCTION_NORMAL, FOLDER_ENTRY_LEN) => match entry_shape(store)? {
            EntryShape::Folder => Some(IdKind::Folder),
            EntryShape::Message | EntryShape::ImmutableMessage => None,
        },
        (INSTRUCTION_NORMAL, MESSAGE_ENTRY_LEN) => match entry_shape(store)? {
            EntryShape::Message => Some(IdKind::Item),
            EntryShape::Folder | EntryShape::ImmutableMessage => None,
        },
        (INSTRUCTION_RECURRENCE, OCCURRENCE_STORE_LEN) => {
            let (&marker, rest) = store.split_first()?;
            let (_date, rest) = rest.split_at_checked(8)?;
            let (&entry_len, rest) = rest.split_first()?;
            let (entry, end) = rest.split_at_checked(MESSAGE_ENTRY_LEN)?;
            let valid = marker == OCCURRENCE_MARKER
                && usize::from(entry_len) == MESSAGE_ENTRY_LEN
                && end == [OCCURRENCE_END]
                && entry_shape(entry)? == EntryShape::Message;
            valid.then_some(IdKind::Occurrence)
        }
        _ => None,
    }
}

/// The bytes after a message StoreId in an attachment ID. Observed: `01`, then `12 00` and
/// 18 bytes holding `10 00` and a 16-byte key. Read as a count followed by that many u16-LE
/// counted blocks (a nested attachment adds a block); field names are unconfirmed.
fn is_attachment_suffix(suffix: &[u8]) -> bool {
    let mut cursor = ByteCursor::new(suffix);
    let Some(count) = cursor.byte() else {
        return false;
    };
    if count == 0 {
        return false;
    }
    for _ in 0..count {
        match cursor.counted() {
            Some(block) if !block.is_empty() => {}
            _ => return false,
        }
    }
    cursor.is_empty()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryShape {
    Folder,
    Message,
    ImmutableMessage,
}

/// Checks a MAPI store-object entry ID: zero flags, an object type that matches the length,
/// and zero pad bytes after each GUID+counter (MS-OXCDATA requires them to be zero).
fn entry_shape(entry: &[u8]) -> Option<EntryShape> {
    let flags = entry.get(0..4)?;
    let provider_uid = entry.get(4..20)?;
    let object_type = u16::from_le_bytes([*entry.get(20)?, *entry.get(21)?]);
    if flags != [0, 0, 0, 0] || entry.get(44..46)? != [0, 0] {
        return None;
    }
    match entry.len() {
        FOLDER_ENTRY_LEN => match object_type {
            TYPE_PRIVATE_FOLDER | TYPE_PUBLIC_FOLDER => Some(EntryShape::Folder),
            TYPE_IMMUTABLE_MESSAGE if provider_uid == IMMUTABLE_PROVIDER_UID => {
                Some(EntryShape::ImmutableMessage)
            }
            _ => None,
        },
        MESSAGE_ENTRY_LEN => {
            let message_type = matches!(object_type, TYPE_PRIVATE_MESSAGE | TYPE_PUBLIC_MESSAGE);
            (message_type && entry.get(68..70)? == [0, 0]).then_some(EntryShape::Message)
        }
        _ => None,
    }
}

/// `restImmutableEntryId`: the fixed prefix is not enough, the 51 bytes must also hold the
/// immutable entry layout (graph-facts.md 2.4).
fn classify_rest_immutable(text: &[u8]) -> Option<ExchangeId> {
    let mut decoded = [0u8; IMMUTABLE_REST_BYTES];
    let len = decode_unpadded(text, &REST_TABLE, &mut decoded)?;
    let (header, entry) = decoded.get(..len)?.split_at_checked(5)?;
    let entry_len = u16::try_from(FOLDER_ENTRY_LEN).ok()?.to_le_bytes();
    let valid_header = header == [0x00, 0x09, 0x00, entry_len[0], entry_len[1]];
    (valid_header && entry_shape(entry)? == EntryShape::ImmutableMessage).then_some(ExchangeId {
        format: IdFormat::RestImmutableEntryId,
        kind: IdKind::Item,
        mailbox_guid: None,
    })
}

/// `entryId` / `immutableEntryId`: URL-safe base64 of a 70- or 46-byte entry ID plus the
/// padding digit. The alphabet question (graph-facts.md 2.3) does not affect acceptance:
/// the flags, type and pad bytes that are checked never encode to `-` or `_`.
fn classify_entry_id(text: &[u8]) -> Option<ExchangeId> {
    if text.len() != MESSAGE_ENTRY_ID_TEXT_LEN && text.len() != FOLDER_ENTRY_ID_TEXT_LEN {
        return None;
    }
    let mut decoded = [0u8; MESSAGE_ENTRY_LEN];
    let len = decode_entry_id_into(text, &mut decoded)?;
    let (format, kind) = match classify_entry(decoded.get(..len)?)? {
        (EntryShape::ImmutableMessage, kind) => (IdFormat::ImmutableEntryId, kind),
        (_, kind) => (IdFormat::EntryId, kind),
    };
    Some(ExchangeId {
        format,
        kind,
        mailbox_guid: None,
    })
}

/// The shape of a decoded binary entry ID and the kind it stands for.
fn classify_entry(entry: &[u8]) -> Option<(EntryShape, IdKind)> {
    let shape = entry_shape(entry)?;
    let kind = match shape {
        EntryShape::Folder => IdKind::Folder,
        EntryShape::Message | EntryShape::ImmutableMessage => IdKind::Item,
    };
    Some((shape, kind))
}

/// Hex entry IDs (92 or 140 hex digits). Immutable entries are not accepted in hex: no
/// source produces them, and converting one to `entryId` would mislabel it.
fn classify_hex_entry_id(text: &[u8]) -> Option<ExchangeId> {
    if text.len() != MESSAGE_HEX_LEN && text.len() != FOLDER_HEX_LEN {
        return None;
    }
    let mut decoded = [0u8; MESSAGE_ENTRY_LEN];
    let len = decode_hex_into(text, &mut decoded)?;
    let kind = match classify_entry(decoded.get(..len)?)? {
        (EntryShape::ImmutableMessage, _) => return None,
        (_, kind) => kind,
    };
    Some(ExchangeId {
        format: IdFormat::HexEntryId,
        kind,
        mailbox_guid: None,
    })
}

/// "D" form GUID text: 8-4-4-4-12 hex digits. Exchange writes lower case; either case is
/// accepted because the rest of the layout already pins the ID down.
fn is_guid_text(moniker: &[u8]) -> bool {
    let Ok(text) = <&[u8; GUID_TEXT_LEN]>::try_from(moniker) else {
        return false;
    };
    // Every REST or EWS ID of a body has one, so this is a fold without early exit over
    // comparisons without branches, which the compiler does a vector at a time.
    text.iter()
        .zip(&GUID_DASHES)
        .fold(true, |valid, (&c, &dash)| {
            let hex = (c.wrapping_sub(b'0') < 10) | ((c | 0x20).wrapping_sub(b'a') < 6);
            valid & if dash { c == b'-' } else { hex }
        })
}

/// Where "D" form GUID text has its dashes.
const GUID_DASHES: [bool; GUID_TEXT_LEN] = {
    let mut dashes = [false; GUID_TEXT_LEN];
    dashes[8] = true;
    dashes[13] = true;
    dashes[18] = true;
    dashes[23] = true;
    dashes
};

/// A forward-only reader over a byte slice; every read is bounds-checked.
struct ByteCursor<'a> {
    rest: &'a [u8],
}

impl<'a> ByteCursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        ByteCursor { rest: bytes }
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// A u16 little-endian length followed by that many bytes.
    fn counted(&mut self) -> Option<&'a [u8]> {
        let lo = self.byte()?;
        let hi = self.byte()?;
        let (content, rest) = self
            .rest
            .split_at_checked(usize::from(u16::from_le_bytes([lo, hi])))?;
        self.rest = rest;
        Some(content)
    }

    fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// EWS ID run-length decoding (MS-OXCEXT 2.2.6.1): a byte followed by the same byte is a
/// run, and the next byte holds the run length minus 2. A pair without its count byte is
/// malformed. The output is bounded by `out`, so a hostile stream cannot expand unbounded.
fn decompress_rle<'o>(input: &[u8], out: &'o mut [u8; MAX_PAYLOAD_LEN]) -> Option<&'o [u8]> {
    let mut written = 0usize;
    let mut i = 0usize;
    while let Some(&b) = input.get(i) {
        let run = if input.get(i + 1) == Some(&b) {
            let extra = *input.get(i + 2)?;
            i += 3;
            usize::from(extra) + 2
        } else {
            i += 1;
            1
        };
        let end = written + run;
        out.get_mut(written..end)?.fill(b);
        written = end;
    }
    out.get(..written)
}

/// Strict padded base64: length a multiple of 4, at most two `=` and only at the end,
/// unused bits zero. Returns the number of bytes written to `out`.
fn decode_padded(text: &[u8], table: &Alphabet, out: &mut [u8]) -> Option<usize> {
    match decode_padded_flagged(text, table, out)? {
        (len, 0) => Some(len),
        _ => None,
    }
}

/// `decode_padded` through a table with flag bits (`MAILBOX_TABLE`): also returns the
/// flags of every character, ORed, and leaves judging them to the caller.
fn decode_padded_flagged(text: &[u8], table: &Alphabet, out: &mut [u8]) -> Option<(usize, u8)> {
    if text.len() % 4 != 0 {
        return None;
    }
    let pads = text.iter().rev().take_while(|&&c| c == b'=').count();
    if pads > 2 {
        return None;
    }
    decode_flagged(text.get(..text.len() - pads)?, table, out)
}

/// Strict unpadded base64 (the padding, if any, already removed by the caller): a
/// remainder of one character is impossible, and the unused bits of the last character
/// must be zero so that each byte string has exactly one accepted text.
fn decode_unpadded(text: &[u8], table: &Alphabet, out: &mut [u8]) -> Option<usize> {
    match decode_flagged(text, table, out)? {
        (len, 0) => Some(len),
        _ => None,
    }
}

/// Strict unpadded base64 in Graph's REST alphabet (`REST_TABLE`): the ID cache stores REST
/// IDs decoded with it. Returns the number of bytes written to `out`.
pub(crate) fn decode_rest_unpadded(text: &[u8], out: &mut [u8]) -> Option<usize> {
    decode_unpadded(text, &REST_TABLE, out)
}

/// The decoder under `decode_unpadded`: a table entry's low six bits are the sextet and its
/// top two are flags (`NOT_BASE64` has both), ORed over the whole text and returned with
/// the number of bytes written. Four characters at a time, through the spread table
/// (`Alphabet`): this runs on every ID-shaped string of a rewritten body.
fn decode_flagged(text: &[u8], table: &Alphabet, out: &mut [u8]) -> Option<(usize, u8)> {
    let chunks = text.chunks_exact(4);
    let tail = chunks.remainder();
    let tail_bytes = match tail.len() {
        0 => 0,
        2 => 1,
        3 => 2,
        _ => return None,
    };
    let whole = chunks.len() * 3;
    let (body_out, tail_out) = out.get_mut(..whole + tail_bytes)?.split_at_mut(whole);
    let [w0, w1, w2, w3] = &table.wide;
    let mut seen_groups = 0u32;
    for (chunk, slot) in chunks.zip(body_out.chunks_exact_mut(3)) {
        let &[a, b, c, d] = chunk else {
            return None;
        };
        let group =
            w0[usize::from(a)] | w1[usize::from(b)] | w2[usize::from(c)] | w3[usize::from(d)];
        seen_groups |= group;
        let [_flags, x, y, z] = group.to_be_bytes();
        slot.copy_from_slice(&[x, y, z]);
    }
    let entry = |c: u8| table.table[usize::from(c)];
    let [mut seen, ..] = seen_groups.to_be_bytes();
    match *tail {
        [] => {}
        [a, b] => {
            let (a, b) = (entry(a), entry(b));
            seen |= a | b;
            let (a, b) = (u32::from(a & 63), u32::from(b & 63));
            if b & 0x0f != 0 {
                return None;
            }
            // `as u8` keeps the low eight bits on purpose: that is the decoded byte.
            tail_out.copy_from_slice(&[((a << 2) | (b >> 4)) as u8]);
        }
        [a, b, c] => {
            let (a, b, c) = (entry(a), entry(b), entry(c));
            seen |= a | b | c;
            let v = (u32::from(a & 63) << 12) | (u32::from(b & 63) << 6) | u32::from(c & 63);
            if v & 0x03 != 0 {
                return None;
            }
            tail_out.copy_from_slice(&[(v >> 10) as u8, (v >> 2) as u8]);
        }
        _ => return None,
    }
    Some((whole + tail_bytes, seen & FLAGS))
}

/// Graph binary format: URL-safe base64 without `=`, then one digit saying how many `=`
/// were removed. The digit must match the length exactly.
fn decode_entry_id_into(text: &[u8], out: &mut [u8]) -> Option<usize> {
    let (&digit, body) = text.split_last()?;
    let removed = match digit {
        b'0' => 0,
        b'1' => 1,
        b'2' => 2,
        _ => return None,
    };
    if body.is_empty() || (body.len() + removed) % 4 != 0 {
        return None;
    }
    decode_unpadded(body, &URL_SAFE_TABLE, out)
}

fn decode_hex_into(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if text.is_empty() || text.len() % 2 != 0 || text.len() / 2 > out.len() {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *slot = u8::try_from((hi << 4) | lo).ok()?;
    }
    Some(text.len() / 2)
}

/// The raw REST-alphabet decoder that `classify` uses (`-` is 63, `_` is 62, `=` padding
/// required and canonical). Exposed so ID builders can be cross-checked against it.
pub fn decode_rest(s: &str) -> Option<Vec<u8>> {
    decode_padded_to_vec(s, &REST_TABLE)
}

/// The raw EWS (standard base64) decoder that `classify` uses, strict like `decode_rest`.
pub fn decode_ews(s: &str) -> Option<Vec<u8>> {
    decode_padded_to_vec(s, &EWS_TABLE)
}

/// The raw `entryId`/`immutableEntryId` decoder: URL-safe base64 plus padding digit.
pub fn decode_entry_id(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; s.len() / 4 * 3 + 2];
    let len = decode_entry_id_into(s.as_bytes(), &mut out)?;
    out.truncate(len);
    Some(out)
}

fn decode_padded_to_vec(s: &str, table: &Alphabet) -> Option<Vec<u8>> {
    let mut out = vec![0u8; s.len() / 4 * 3];
    let len = decode_padded(s.as_bytes(), table, &mut out)?;
    out.truncate(len);
    Some(out)
}

/// Extracts the ID text from a URL path segment: percent-decodes it and strips OData key
/// syntax (`messages('AAMk...%3D')`, `('...')`, `'...'`). `None` if the segment is
/// malformed or cannot hold an ID (wrong length or characters); the result still has to
/// go through `classify`. Borrows when the segment needed no percent-decoding.
pub fn id_in_path_segment(segment: &str) -> Option<Cow<'_, str>> {
    if segment.len() < MIN_ID_LEN || segment.len() > MAX_SEGMENT_LEN {
        return None;
    }
    let decoded = percent_decode_ascii(segment)?;
    let (start, end) = odata_key_span(&decoded)?;
    let candidate = match decoded {
        Cow::Borrowed(s) => Cow::Borrowed(s.get(start..end)?),
        Cow::Owned(s) => Cow::Owned(s.get(start..end)?.to_owned()),
    };
    is_id_candidate(&candidate).then_some(candidate)
}

/// Byte range of the key inside `name('key')`, `('key')` or `'key'`, else the whole text.
fn odata_key_span(text: &str) -> Option<(usize, usize)> {
    if let Some(body) = text.strip_suffix("')") {
        let open = body.find("('")?;
        let name = body.get(..open)?;
        if !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            return None;
        }
        return Some((open + 2, body.len()));
    }
    if text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'') {
        return Some((1, text.len() - 1));
    }
    Some((0, text.len()))
}

/// Percent-decodes, refusing malformed escapes and anything that decodes outside ASCII
/// (IDs are ASCII), so the result is always valid UTF-8.
fn percent_decode_ascii(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('%') {
        return Some(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0usize;
    while let Some(&c) = bytes.get(i) {
        let decoded = if c == b'%' {
            let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
            let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
            i += 3;
            u8::try_from((hi << 4) | lo).ok()?
        } else {
            i += 1;
            c
        };
        if !decoded.is_ascii() {
            return None;
        }
        out.push(char::from(decoded));
    }
    Some(Cow::Owned(out))
}

fn is_id_candidate(text: &str) -> bool {
    (MIN_ID_LEN..=MAX_ID_LEN).contains(&text.len())
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_' | b'='))
}

/// EWS alphabet to REST alphabet: `+` -> `_`, `/` -> `-`, padding kept. Other characters
/// pass through unchanged.
pub fn ews_to_rest(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '+' => '_',
            '/' => '-',
            other => other,
        })
        .collect()
}

/// REST alphabet to EWS alphabet: `_` -> `+`, `-` -> `/`, padding kept.
pub fn rest_to_ews(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '_' => '+',
            '-' => '/',
            other => other,
        })
        .collect()
}

/// Encodes bytes as a Graph binary-format ID (`entryId`, `immutableEntryId`): RFC 4648
/// URL-safe base64 without `=`, then the count of removed `=` as a digit.
pub fn entry_id_from_bytes(bytes: &[u8]) -> String {
    let mut text = URL_SAFE_NO_PAD.encode(bytes);
    text.push(match bytes.len() % 3 {
        0 => '0',
        1 => '2',
        _ => '1',
    });
    text
}

/// Converts a hex entry ID (Outlook VBA `EntryID`, EWS `HexEntryId`) into the `entryId`
/// form Graph accepts. Only checks that the text is hex; `classify` checks the structure.
pub fn hex_entry_id_to_entry_id(hex: &str) -> Option<String> {
    let mut bytes = vec![0u8; hex.len() / 2];
    let len = decode_hex_into(hex.as_bytes(), &mut bytes)?;
    bytes.truncate(len);
    Some(entry_id_from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::alphabet::Alphabet;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
    use base64::engine::DecodePaddingMode;
    use proptest::prelude::*;

    use crate::id_samples::*;

    /// Every Exchange ID sample from id-samples.tsv.
    const ID_SAMPLES: [&str; 13] = [
        REST_MSG,
        REST_ATT,
        REST_FOLDER,
        REST_OCC,
        EWS_OCC,
        EWS_MSG_SEARCH,
        EWS_RLE_FOLDER,
        REST_RLE_MSG,
        CONV,
        IMM,
        ENTRYID,
        IMMENTRYID,
        HEXEID,
    ];

    fn id(format: IdFormat, kind: IdKind, guid: Option<&str>) -> Option<ExchangeId> {
        Some(ExchangeId {
            format,
            kind,
            mailbox_guid: guid.map(|g| MailboxGuid::parse(g).expect("a GUID")),
        })
    }

    fn rest_engine() -> GeneralPurpose {
        let alphabet =
            Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
                .expect("the REST alphabet has 64 distinct printable characters");
        let config = GeneralPurposeConfig::new()
            .with_encode_padding(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical);
        GeneralPurpose::new(&alphabet, config)
    }

    fn standard_strict() -> GeneralPurpose {
        let config = GeneralPurposeConfig::new()
            .with_encode_padding(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical);
        GeneralPurpose::new(&base64::alphabet::STANDARD, config)
    }

    /// The mailbox-ID path as it was before the one-pass decoder: the alphabet picked by a
    /// separate scan for its four special characters, the text decoded by the base64
    /// crate's strict engine for that alphabet, then the same layout checks.
    fn classify_mailbox_id_reference(text: &str) -> Option<ExchangeId> {
        let rest_chars = text.contains(['-', '_']);
        let ews_chars = text.contains(['+', '/']);
        let (format, engine) = match (rest_chars, ews_chars) {
            (true, true) => return None,
            (false, true) => (IdFormat::EwsId, standard_strict()),
            (_, false) => (IdFormat::RestId, rest_engine()),
        };
        let bytes = engine.decode(text).ok()?;
        if bytes.len() > MAX_DECODED_LEN {
            return None;
        }
        classify_mailbox_bytes(format, &bytes)
    }

    fn mailbox_id(text: &str) -> Option<ExchangeId> {
        classify_mailbox_id(text.as_bytes(), &mut [0u8; MAX_DECODED_LEN]).map(|(id, _)| id)
    }

    /// `classify_keeping_bytes` classifies exactly like `classify` (also with a scratch
    /// buffer full of an earlier ID's bytes), and the bytes it keeps are the strict
    /// decoding of the ID's REST form, which the ID cache would otherwise compute.
    fn assert_keeping_bytes_agrees(text: &str, scratch: &mut DecodeBuffer) {
        let kept = classify_keeping_bytes(text, scratch);
        assert_eq!(
            kept.as_ref().map(|(id, _)| id.clone()),
            classify(text),
            "{text}"
        );
        let Some((id, bytes)) = kept else {
            return;
        };
        match id.format {
            IdFormat::RestId | IdFormat::EwsId | IdFormat::ConversationId => {
                let bytes = bytes.expect("a mailbox ID keeps its bytes");
                assert_eq!(
                    Some(bytes.bytes.to_vec()),
                    decode_rest(&ews_to_rest(text)),
                    "{text}"
                );
                assert_eq!(bytes.padded, text.ends_with('='), "{text}");
            }
            _ => assert_eq!(bytes, None, "{text}"),
        }
    }

    /// The per-position `match` that `is_guid_text` replaced, kept as its reference.
    fn is_guid_text_reference(moniker: &[u8]) -> bool {
        moniker.len() == GUID_TEXT_LEN
            && moniker.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    }

    #[test]
    fn guid_check_and_lower_casing_agree_with_the_plain_ones() {
        let guid = b"6F9A2A92-8527-4d64-837e-b5312852f36D";
        assert!(is_guid_text(guid));
        assert_eq!(
            MailboxGuid::parse(std::str::from_utf8(guid).unwrap()).map(|g| g.to_string()),
            Some(String::from_utf8(guid.to_ascii_lowercase()).unwrap())
        );
        for at in 0..guid.len() {
            for c in 0..=u8::MAX {
                let mut text = *guid;
                text[at] = c;
                assert_eq!(
                    is_guid_text(&text),
                    is_guid_text_reference(&text),
                    "{at} {c}"
                );
                let parsed = std::str::from_utf8(&text).ok().and_then(MailboxGuid::parse);
                if let Some(parsed) = parsed {
                    assert_eq!(parsed.as_str().as_bytes(), text.to_ascii_lowercase());
                }
            }
        }
        assert!(!is_guid_text(&guid[1..]));
        assert!(!is_guid_text(b""));
    }

    #[test]
    fn keeping_the_bytes_changes_no_classification() {
        let mut scratch = [0xa5u8; MAX_DECODED_LEN];
        for sample in ID_SAMPLES.iter().chain(&[GUID, UPN, CHANGEKEY]) {
            for text in [
                sample.to_string(),
                ews_to_rest(sample),
                rest_to_ews(sample),
                sample.trim_end_matches('=').to_owned(),
                format!("{sample}AAAA"),
            ] {
                assert_keeping_bytes_agrees(&text, &mut scratch);
            }
        }
    }

    #[test]
    fn one_pass_alphabet_detection_agrees_with_the_reference_on_samples() {
        for sample in ID_SAMPLES {
            let variants = [
                sample.to_owned(),
                ews_to_rest(sample),
                rest_to_ews(sample),
                sample.replacen('A', "-", 1),
                sample.replacen('A', "+", 1),
                sample.replacen('A', ".", 1),
                format!("{sample}AAAA"),
            ];
            for text in variants {
                assert_eq!(
                    mailbox_id(&text),
                    classify_mailbox_id_reference(&text),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn rest_message_is_a_translatable_item_of_its_mailbox() {
        let got = classify(REST_MSG);
        assert_eq!(
            got,
            id(
                IdFormat::RestId,
                IdKind::Item,
                Some("80734d9e-5abb-456d-b0b8-1b9029d643e9")
            )
        );
        assert!(got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn rest_attachment_is_an_attachment_not_translatable() {
        let got = classify(REST_ATT);
        assert_eq!(
            got,
            id(
                IdFormat::RestId,
                IdKind::Attachment,
                Some("80734d9e-5abb-456d-b0b8-1b9029d643e9")
            )
        );
        assert!(!got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn rest_folder_is_a_folder_with_rest_alphabet_underscores() {
        let got = classify(REST_FOLDER);
        assert_eq!(
            got,
            id(
                IdFormat::RestId,
                IdKind::Folder,
                Some("9b2e9b2e-5f2d-4d35-bb04-7fe06524119c")
            )
        );
        assert!(!got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn occurrence_is_recognised_in_both_alphabets() {
        let guid = Some("e31a3fdc-93ca-4315-a933-dbf426160746");
        assert_eq!(
            classify(REST_OCC),
            id(IdFormat::RestId, IdKind::Occurrence, guid)
        );
        assert_eq!(
            classify(EWS_OCC),
            id(IdFormat::EwsId, IdKind::Occurrence, guid)
        );
    }

    #[test]
    fn search_result_in_ews_alphabet_is_a_translatable_item() {
        let got = classify(EWS_MSG_SEARCH);
        assert_eq!(
            got,
            id(
                IdFormat::EwsId,
                IdKind::Item,
                Some("7f87a7cc-30ef-40b7-b061-fae928c8bdad")
            )
        );
        assert!(got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn compressed_ews_folder_decompresses_to_a_folder() {
        assert_eq!(
            classify(EWS_RLE_FOLDER),
            id(
                IdFormat::EwsId,
                IdKind::Folder,
                Some("7f87a7cc-30ef-40b7-b061-fae928c8bdad")
            )
        );
    }

    #[test]
    fn compressed_rest_message_is_a_translatable_item() {
        let got = classify(REST_RLE_MSG);
        assert_eq!(
            got,
            id(
                IdFormat::RestId,
                IdKind::Item,
                Some("c000a3a6-ab0e-48d4-b5a4-183801e631e7")
            )
        );
        assert!(got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn conversation_id_is_never_translatable() {
        let got = classify(CONV);
        assert_eq!(
            got,
            id(
                IdFormat::ConversationId,
                IdKind::Conversation,
                Some("7f87a7cc-30ef-40b7-b061-fae928c8bdad")
            )
        );
        assert!(!got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn rest_immutable_id_is_an_item_already_immutable() {
        let got = classify(IMM);
        assert_eq!(got, id(IdFormat::RestImmutableEntryId, IdKind::Item, None));
        assert!(!got.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn binary_entry_ids_are_labelled_regular_or_immutable() {
        let entry = classify(ENTRYID);
        assert_eq!(entry, id(IdFormat::EntryId, IdKind::Item, None));
        assert!(entry.is_some_and(|id| id.is_translatable()));
        let immutable = classify(IMMENTRYID);
        assert_eq!(
            immutable,
            id(IdFormat::ImmutableEntryId, IdKind::Item, None)
        );
        assert!(!immutable.is_some_and(|id| id.is_translatable()));
    }

    #[test]
    fn hex_entry_id_is_recognised_but_not_translatable_until_converted() {
        let got = classify(HEXEID);
        assert_eq!(got, id(IdFormat::HexEntryId, IdKind::Item, None));
        assert!(!got.is_some_and(|id| id.is_translatable()));
        assert_eq!(hex_entry_id_to_entry_id(HEXEID).as_deref(), Some(ENTRYID));
        assert_eq!(
            hex_entry_id_to_entry_id(&HEXEID.to_lowercase()).as_deref(),
            Some(ENTRYID)
        );
    }

    #[test]
    fn guid_upn_and_change_key_are_not_ids() {
        assert_eq!(classify(GUID), None);
        assert_eq!(classify(UPN), None);
        assert_eq!(classify(CHANGEKEY), None);
        assert_eq!(classify(&ews_to_rest(CHANGEKEY)), None);
    }

    #[test]
    fn folder_entry_id_is_a_folder() {
        let rest_bytes = decode_rest(REST_FOLDER).expect("sample decodes");
        let folder_entry = &rest_bytes[43..];
        assert_eq!(folder_entry.len(), FOLDER_ENTRY_LEN);
        let text = entry_id_from_bytes(folder_entry);
        assert_eq!(text.len(), FOLDER_ENTRY_ID_TEXT_LEN);
        assert!(text.ends_with('2'));
        assert_eq!(classify(&text), id(IdFormat::EntryId, IdKind::Folder, None));
    }

    #[test]
    fn entry_id_equals_the_tail_of_its_rest_id() {
        let entry = decode_entry_id(ENTRYID).expect("sample decodes");
        assert_eq!(entry.len(), MESSAGE_ENTRY_LEN);
        assert_eq!(entry_id_from_bytes(&entry), ENTRYID);
        let rest = decode_rest(REST_MSG).expect("sample decodes");
        assert_eq!(rest.len(), 113);
        assert_eq!(
            entry_id_from_bytes(&rest[43..]).len(),
            MESSAGE_ENTRY_ID_TEXT_LEN
        );
    }

    #[test]
    fn immutable_entry_id_holds_the_same_entry_as_the_rest_immutable_id() {
        let rest = decode_rest(IMM).expect("sample decodes");
        let entry = decode_entry_id(IMMENTRYID).expect("sample decodes");
        assert_eq!(&rest[5..], entry.as_slice());
    }

    #[test]
    fn ews_and_rest_forms_swap_characters_only() {
        assert_eq!(ews_to_rest(EWS_OCC), REST_OCC);
        assert_eq!(rest_to_ews(REST_OCC), EWS_OCC);
        assert_eq!(rest_to_ews(&ews_to_rest(EWS_MSG_SEARCH)), EWS_MSG_SEARCH);
        assert_eq!(decode_ews(EWS_OCC), decode_rest(REST_OCC));
        let rest_search = ews_to_rest(EWS_MSG_SEARCH);
        assert_eq!(
            classify(&rest_search),
            id(
                IdFormat::RestId,
                IdKind::Item,
                Some("7f87a7cc-30ef-40b7-b061-fae928c8bdad")
            )
        );
    }

    /// Re-encodes the uncompressed REST_MSG with its storage type and tail changed.
    fn rest_msg_variant(storage: u8, instruction: u8, tail: &[u8]) -> String {
        let mut bytes = decode_rest(REST_MSG).expect("sample decodes");
        bytes[1] = storage;
        bytes[40] = instruction;
        bytes.extend_from_slice(tail);
        rest_engine().encode(&bytes)
    }

    #[test]
    fn fallback_storage_type_needs_its_internet_message_id() {
        let message_id = b"<a1b2@contoso.com>";
        let mut tail = u16::try_from(message_id.len())
            .expect("short")
            .to_le_bytes()
            .to_vec();
        tail.extend_from_slice(message_id);
        let with_fallback = rest_msg_variant(STORAGE_MAILBOX_WITH_FALLBACK, 0, &tail);
        let got = classify(&with_fallback);
        assert_eq!(
            got,
            id(
                IdFormat::RestId,
                IdKind::Item,
                Some("80734d9e-5abb-456d-b0b8-1b9029d643e9")
            )
        );
        assert!(got.is_some_and(|id| id.is_translatable()));
        assert_eq!(
            classify(&rest_msg_variant(STORAGE_MAILBOX_WITH_FALLBACK, 0, &[])),
            None
        );
        assert_eq!(
            classify(&rest_msg_variant(STORAGE_MAILBOX_WITH_FALLBACK, 0, &[0, 0])),
            None
        );
    }

    #[test]
    fn unknown_storage_types_and_instructions_are_rejected() {
        for storage in [0u8, 1, 2, 5, 7, 9] {
            assert_eq!(
                classify(&rest_msg_variant(storage, 0, &[])),
                None,
                "{storage}"
            );
        }
        for instruction in [1u8, 2, 3] {
            assert_eq!(
                classify(&rest_msg_variant(3, instruction, &[])),
                None,
                "{instruction}"
            );
        }
        assert_eq!(
            classify(&rest_msg_variant(3, 0, &[])),
            classify(REST_MSG),
            "the helper itself keeps a valid ID valid"
        );
    }

    #[test]
    fn folder_with_trailing_bytes_is_not_an_attachment() {
        let mut bytes = decode_rest(REST_FOLDER).expect("sample decodes");
        bytes.extend_from_slice(&[0x01, 0x02, 0x00, 0xaa, 0xbb]);
        assert_eq!(classify(&rest_engine().encode(&bytes)), None);
    }

    #[test]
    fn id_mixing_both_alphabets_is_rejected() {
        let mixed = REST_FOLDER.replacen('_', "+", 1);
        assert_eq!(classify(&mixed), None);
    }

    #[test]
    fn rle_sample_expands_runs_to_the_uncompressed_layout() {
        let bytes = decode_rest(REST_RLE_MSG).expect("sample decodes");
        let mut out = [0u8; MAX_PAYLOAD_LEN];
        let payload = decompress_rle(&bytes[1..], &mut out).expect("well-formed runs");
        assert_eq!(payload.len(), 112);
        assert_eq!(&payload[..7], b"\x03\x24\x00c000");
        assert_eq!(&payload[39..46], &[0x00, 0x46, 0x00, 0, 0, 0, 0]);
    }

    #[test]
    fn rle_pair_without_count_byte_is_malformed() {
        let mut out = [0u8; MAX_PAYLOAD_LEN];
        assert_eq!(decompress_rle(&[0x03, 0x07, 0x07], &mut out), None);
        assert_eq!(
            decompress_rle(&[0x03, 0x07, 0x07, 0x01], &mut out).map(<[u8]>::to_vec),
            Some(vec![0x03, 0x07, 0x07, 0x07])
        );
    }

    #[test]
    fn rle_stream_expanding_past_the_payload_cap_is_rejected() {
        let bomb = [0u8, 0, 255].repeat(5);
        let mut out = [0u8; MAX_PAYLOAD_LEN];
        assert_eq!(decompress_rle(&bomb, &mut out), None);
    }

    #[test]
    fn every_truncation_of_a_sample_is_rejected() {
        for sample in ID_SAMPLES {
            for len in 0..sample.len() {
                assert_eq!(classify(&sample[..len]), None, "{sample} cut to {len}");
            }
        }
    }

    #[test]
    fn repadded_and_depadded_samples_are_rejected() {
        for sample in ID_SAMPLES {
            let trimmed = sample.trim_end_matches('=');
            let variants = [
                trimmed.to_owned(),
                format!("{sample}="),
                format!("{sample}=="),
                format!("{trimmed}="),
                format!("{sample}A"),
                format!("{sample}AAAA"),
            ];
            for variant in variants.iter().filter(|v| v.as_str() != sample) {
                assert_eq!(classify(variant), None, "{variant}");
            }
        }
        let digitless = &ENTRYID[..ENTRYID.len() - 1];
        for variant in [
            digitless.to_owned(),
            format!("{digitless}=="),
            format!("{digitless}0"),
            format!("{digitless}1"),
        ] {
            assert_eq!(classify(&variant), None, "{variant}");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        // 'B' instead of 'A' before the padding sets a bit that no byte uses.
        let rest = REST_MSG.replace("PAAA=", "PAAB=");
        assert_eq!(decode_rest(&rest), None);
        assert_eq!(classify(&rest), None);
        let entry = ENTRYID.replace("AAA2", "AAB2");
        assert_eq!(classify(&entry), None);
    }

    #[test]
    fn strings_outside_the_length_window_are_rejected() {
        assert_eq!(classify(""), None);
        assert_eq!(classify(&"A".repeat(39)), None);
        assert_eq!(classify(&format!("{REST_MSG}{}", "A".repeat(700))), None);
        assert_eq!(classify(&"A".repeat(701)), None);
        assert_eq!(classify(&"A".repeat(700)), None);
    }

    #[test]
    fn regular_id_in_a_fixed_prefix_shape_is_not_taken_for_immutable() {
        let wrong_tail = format!("{}{}", IMMUTABLE_REST_PREFIX, "B".repeat(32));
        assert_eq!(classify(&wrong_tail), None);
    }

    #[test]
    fn percent_encoded_path_segment_yields_the_id() {
        let encoded = REST_MSG.replace('=', "%3D");
        assert_eq!(id_in_path_segment(&encoded).as_deref(), Some(REST_MSG));
        let ews_encoded = EWS_MSG_SEARCH.replace('/', "%2F").replace('=', "%3d");
        assert_eq!(
            id_in_path_segment(&ews_encoded).as_deref(),
            Some(EWS_MSG_SEARCH)
        );
    }

    #[test]
    fn odata_key_syntax_is_stripped() {
        let segment = format!("messages('{}')", REST_MSG.replace('=', "%3D"));
        assert_eq!(id_in_path_segment(&segment).as_deref(), Some(REST_MSG));
        let quoted_encoded = format!("lists(%27{}%27)", REST_FOLDER);
        assert_eq!(
            id_in_path_segment(&quoted_encoded).as_deref(),
            Some(REST_FOLDER)
        );
        let bare_key = format!("('{REST_MSG}')");
        assert_eq!(id_in_path_segment(&bare_key).as_deref(), Some(REST_MSG));
        let quoted = format!("'{IMM}'");
        assert_eq!(id_in_path_segment(&quoted).as_deref(), Some(IMM));
    }

    #[test]
    fn plain_segment_is_borrowed_not_copied() {
        assert!(matches!(
            id_in_path_segment(REST_MSG),
            Some(Cow::Borrowed(REST_MSG))
        ));
        let segment = format!("messages('{REST_MSG}')");
        assert!(matches!(
            id_in_path_segment(&segment),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn non_id_segments_are_not_candidates() {
        assert_eq!(id_in_path_segment("messages"), None);
        assert_eq!(id_in_path_segment(UPN), None);
        let bad_escape = format!("{REST_MSG}%3");
        assert_eq!(id_in_path_segment(&bad_escape), None);
        let non_ascii = format!("{REST_MSG}%C3%A9");
        assert_eq!(id_in_path_segment(&non_ascii), None);
        let with_space = format!("{}%20{}", &REST_MSG[..60], &REST_MSG[60..]);
        assert_eq!(id_in_path_segment(&with_space), None);
        let odd_name = format!("mess ages('{REST_MSG}')");
        assert_eq!(id_in_path_segment(&odd_name), None);
    }

    #[test]
    fn graph_names_match_the_exchange_id_format_enum() {
        assert_eq!(IdFormat::RestId.graph_name(), "restId");
        assert_eq!(IdFormat::EwsId.graph_name(), "ewsId");
        assert_eq!(IdFormat::EntryId.graph_name(), "entryId");
        assert_eq!(IdFormat::ImmutableEntryId.graph_name(), "immutableEntryId");
        assert_eq!(
            IdFormat::RestImmutableEntryId.graph_name(),
            "restImmutableEntryId"
        );
        assert!(!IdFormat::HexEntryId.is_graph_exchange_id_format());
        assert!(!IdFormat::ConversationId.is_graph_exchange_id_format());
        assert!(IdFormat::RestId.is_graph_exchange_id_format());
    }

    #[test]
    fn entry_id_padding_digit_counts_removed_padding() {
        assert_eq!(entry_id_from_bytes(&[0xfb, 0xff, 0xbf]), "-_-_0");
        assert_eq!(entry_id_from_bytes(&[0xfb, 0xff]), "-_81");
        assert_eq!(entry_id_from_bytes(&[0xfb]), "-w2");
        assert_eq!(decode_entry_id("-w2"), Some(vec![0xfb]));
        assert_eq!(decode_entry_id("-w1"), None);
        assert_eq!(hex_entry_id_to_entry_id("0G"), None);
        assert_eq!(hex_entry_id_to_entry_id("000"), None);
    }

    /// Single characters that may sit in an ID: both alphabets, padding and digits.
    fn id_char() -> impl Strategy<Value = char> {
        prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="
                .chars()
                .collect::<Vec<_>>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_base64_text_is_never_translatable(
            text in "A[A-Za-z0-9+/]{39,400}={0,2}|A[A-Za-z0-9_-]{39,400}={0,2}|[A-Za-z0-9_=+/-]{40,700}"
        ) {
            prop_assert!(!classify(&text).is_some_and(|id| id.is_translatable()));
        }

        #[test]
        fn random_bytes_encoded_in_either_alphabet_are_not_ids(
            bytes in prop::collection::vec(any::<u8>(), 30..520)
        ) {
            let ews = STANDARD.encode(&bytes);
            prop_assert_eq!(classify(&ews), None);
            prop_assert_eq!(classify(&ews_to_rest(&ews)), None);
            prop_assert_eq!(classify(&entry_id_from_bytes(&bytes)), None);
        }

        #[test]
        fn random_bytes_behind_a_real_header_are_never_translatable(
            tail in prop::collection::vec(any::<u8>(), 0..300),
            compressed in any::<bool>(),
        ) {
            let header = decode_rest(REST_MSG).expect("sample decodes");
            let mut bytes = header[..43].to_vec();
            bytes[0] = u8::from(compressed);
            bytes.extend_from_slice(&tail);
            let ews = STANDARD.encode(&bytes);
            prop_assert!(!classify(&ews).is_some_and(|id| id.is_translatable()));
            prop_assert!(!classify(&ews_to_rest(&ews)).is_some_and(|id| id.is_translatable()));
        }

        #[test]
        fn guids_are_never_ids(
            guid in "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
        ) {
            prop_assert_eq!(classify(&guid), None);
            prop_assert_eq!(classify(&format!("{{{guid}}}")), None);
            prop_assert_eq!(classify(&guid.replace('-', "")), None);
            prop_assert_eq!(classify(&format!("{guid}{guid}")), None);
        }

        #[test]
        fn upns_are_never_ids(upn in "[A-Za-z][A-Za-z0-9._]{0,40}@[a-z0-9]{1,30}\\.onmicrosoft\\.com") {
            prop_assert_eq!(classify(&upn), None);
            prop_assert_eq!(id_in_path_segment(&upn), None);
        }

        #[test]
        fn change_keys_are_never_ids(
            kind in prop::sample::select(vec![1u32, 9, 15]),
            body in prop::collection::vec(any::<u8>(), 22),
        ) {
            let mut bytes = kind.to_le_bytes().to_vec();
            bytes.extend_from_slice(&22u32.to_le_bytes());
            bytes.extend_from_slice(&body);
            let ews = STANDARD.encode(&bytes);
            prop_assert_eq!(classify(&ews), None);
            prop_assert_eq!(classify(&ews_to_rest(&ews)), None);
        }

        #[test]
        fn mutating_the_end_of_a_sample_never_yields_a_translatable_id(
            sample in prop::sample::select(ID_SAMPLES.to_vec()),
            from_end in 1usize..=4,
            replacement in id_char(),
        ) {
            let mut chars: Vec<char> = sample.chars().collect();
            let at = chars.len() - from_end;
            prop_assume!(chars[at] != replacement);
            chars[at] = replacement;
            let mutated: String = chars.into_iter().collect();
            prop_assert!(!classify(&mutated).is_some_and(|id| id.is_translatable()), "{}", mutated);
        }

        #[test]
        fn rest_decoder_agrees_with_the_base64_crate(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            noise in "[A-Za-z0-9_=-]{0,40}",
        ) {
            let engine = rest_engine();
            let text = engine.encode(&bytes);
            prop_assert_eq!(decode_rest(&text), Some(bytes.clone()));
            prop_assert_eq!(decode_rest(&noise), engine.decode(&noise).ok());
        }

        #[test]
        fn ews_decoder_agrees_with_the_base64_crate(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            noise in "[A-Za-z0-9+/=]{0,40}",
        ) {
            let engine = standard_strict();
            let text = engine.encode(&bytes);
            prop_assert_eq!(decode_ews(&text), Some(bytes.clone()));
            prop_assert_eq!(decode_ews(&noise), engine.decode(&noise).ok());
        }

        #[test]
        fn one_pass_mailbox_decoder_agrees_with_the_reference(
            sample in prop::sample::select(ID_SAMPLES.to_vec()),
            edits in prop::collection::vec((any::<prop::sample::Index>(), id_char()), 0..3),
            tail in prop::collection::vec(any::<u8>(), 0..300),
            compressed in any::<bool>(),
            noise in "[A-Za-z0-9_=+/.-]{0,200}",
        ) {
            let mut chars: Vec<char> = sample.chars().collect();
            for (at, c) in edits {
                let at = at.index(chars.len());
                chars[at] = c;
            }
            let edited: String = chars.into_iter().collect();
            let mut bytes = decode_rest(REST_MSG).expect("sample decodes")[..43].to_vec();
            bytes[0] = u8::from(compressed);
            bytes.extend_from_slice(&tail);
            let encoded = STANDARD.encode(&bytes);
            for text in [edited, noise, ews_to_rest(&encoded), encoded] {
                prop_assert_eq!(
                    mailbox_id(&text),
                    classify_mailbox_id_reference(&text),
                    "{}", text
                );
            }
        }

        #[test]
        fn keeping_the_bytes_agrees_on_edited_ids(
            sample in prop::sample::select(ID_SAMPLES.to_vec()),
            edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec!['A', 'B', '-', '_', '+', '/', '=', 'g'])), 0..3),
            noise in "[A-Za-z0-9_=+/-]{0,200}",
        ) {
            let mut chars: Vec<char> = sample.chars().collect();
            for (at, c) in edits {
                let at = at.index(chars.len());
                chars[at] = c;
            }
            let edited: String = chars.into_iter().collect();
            let mut scratch = [0x5au8; MAX_DECODED_LEN];
            for text in [edited, noise] {
                assert_keeping_bytes_agrees(&text, &mut scratch);
            }
        }

        #[test]
        fn entry_id_encoding_roundtrips(bytes in prop::collection::vec(any::<u8>(), 1..200)) {
            prop_assert_eq!(decode_entry_id(&entry_id_from_bytes(&bytes)), Some(bytes));
        }

        #[test]
        fn alphabet_swap_roundtrips(text in "[A-Za-z0-9+/]{0,200}={0,2}") {
            let rest = ews_to_rest(&text);
            prop_assert!(!rest.contains('+') && !rest.contains('/'));
            prop_assert_eq!(rest_to_ews(&rest), text.clone());
            prop_assert_eq!(decode_rest(&rest), decode_ews(&text));
        }

        #[test]
        fn path_segment_never_panics_and_only_returns_candidates(segment in "\\PC{0,200}") {
            if let Some(found) = id_in_path_segment(&segment) {
                prop_assert!(is_id_candidate(&found));
            }
        }
    }
}
