//! Rewrite IDs (step 3 of a request), the pure part: find the legacy Outlook item IDs in a
//! request target (path segments and `$filter` literals on `id`), a JSON body, a `$batch`
//! body (sub-request `url`s and `body`s) or, with `rewrite.responses`, the `id`-like keys
//! of a response body; then splice in the immutable IDs the caller looked up.
//!
//! It does no I/O and holds no cache: the caller collects `Candidate`s, resolves their
//! `lookup` forms (cache, store, translateExchangeIds) and hands the answers back as a map.
//! Only strings that `exchange_id::classify` decodes as translatable *items* of a configured
//! source type are candidates, so folders, conversations, change keys, GUIDs, UPNs, URLs and
//! IDs that are already immutable are never touched. Every byte around a replaced ID stays as
//! the app sent it (a `$batch` body excepted, see `apply_to_batch`). It never panics.
//!
//! Decisions worth knowing:
//! - An EWS-alphabet ID is looked up in its REST form, but when the map has no answer the
//!   original EWS text is kept: an unmapped ID is forwarded exactly as the app sent it
//!   (`on_error = "pass"`). A caller that prefers the REST form can map `lookup` to itself.
//! - A map answer equal to the original is no change; an answer that is not ID-shaped
//!   (`[A-Za-z0-9_=+/-]`, at most 700 characters) is ignored, so a damaged store entry can
//!   never inject a quote or a separator into a path or a `$filter`.

use std::hash::BuildHasher;
use std::ops::Range;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::config::SourceType;
use crate::exchange_id::{self, DecodeBuffer, IdFormat, MailboxGuid};
use crate::hashing;
use crate::id_store::CompactKey;
use crate::json_scan::{self, ScanError};

/// An ID written into a URL keeps only RFC 3986 unreserved characters raw, so `=` becomes
/// `%3D` and an EWS `/` or `+` can never split a path or turn into a space.
const URL_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Response keys whose regular item IDs are turned immutable. Deliberately short: `id` is
/// what `$search` lists return, `hitId` what `/search/query` returns (in EWS form). Keys such
/// as `parentFolderId` or `conversationId` never hold items, and a wider list only adds
/// places where an app might compare against a regular ID it stored.
pub const RESPONSE_ID_KEYS: [&str; 2] = ["id", "hitId"];

/// Query options whose value is an OData filter. Graph accepts the `$` prefix as optional.
const FILTER_OPTIONS: [&str; 2] = ["$filter", "filter"];

/// The longest string accepted back from the map (the classifier's own upper bound).
const MAX_REPLACEMENT_LEN: usize = 700;

/// A translatable ID found in a request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What to translate: the REST-alphabet form for an EWS ID, else the ID as found.
    pub lookup: String,
    /// The ID as found, only where it differs from `lookup` (an EWS ID): most candidates
    /// are REST IDs, and a second copy of each was a measurable cost. See `original`.
    ews_original: Option<String>,
    /// The format of the ID as found, as classified (`EwsId` stays `EwsId`).
    pub format: IdFormat,
    /// From the ID's moniker, for grouping translateExchangeIds calls by mailbox.
    pub mailbox_guid: Option<MailboxGuid>,
    /// `lookup`'s key in the ID cache, made from the decoding `classify` did anyway (REST
    /// and EWS IDs whose bytes fit inline), so the look-up need not decode it again.
    cache_key: Option<CompactKey>,
}

impl Candidate {
    /// The ID as found, percent-decoded and unquoted, in its original alphabet.
    pub fn original(&self) -> &str {
        self.ews_original.as_deref().unwrap_or(&self.lookup)
    }

    /// The ID cache's key for `lookup`, when classifying already worked it out.
    pub fn cache_key(&self) -> Option<&CompactKey> {
        self.cache_key.as_ref()
    }

    /// The `sourceIdType` that `lookup` must be sent with: `restId` for an EWS ID, because
    /// the lookup form is already in the REST alphabet.
    pub fn source_id_type(&self) -> IdFormat {
        match self.format {
            IdFormat::EwsId => IdFormat::RestId,
            other => other,
        }
    }
}

/// Where a replacement was made; a 404 is only about IDs in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    PathSegment,
    FilterLiteral,
    JsonString,
}

/// One ID that was replaced, so the caller can count, log and, on a 404, evict it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The key the map was asked with (REST form).
    pub lookup: String,
    /// What was put into the request.
    pub immutable: String,
    pub place: Place,
    /// For a `$batch` body: the `id` of the sub-request it was made in.
    pub batch_request_id: Option<String>,
}

/// A rewritten request part with the replacements made in it (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten<T> {
    pub output: T,
    pub applied: Vec<Replacement>,
}

/// `text` as a candidate when it classifies as a translatable item of one of `sources`.
pub fn candidate_for(text: &str, sources: &[SourceType]) -> Option<Candidate> {
    candidate_decoding(text, sources, &mut [0u8; exchange_id::MAX_DECODED_LEN])
}

/// `candidate_for` with the classifier's decoding buffer supplied by the caller: a scan
/// offers every string of a body and reuses one buffer for all of them.
fn candidate_decoding(
    text: &str,
    sources: &[SourceType],
    scratch: &mut DecodeBuffer,
) -> Option<Candidate> {
    let (id, decoded) = exchange_id::classify_keeping_bytes(text, scratch)?;
    if !id.is_translatable() || !sources.contains(&source_type(id.format)?) {
        return None;
    }
    // An EWS ID decodes to the same bytes as its REST form, so the key fits `lookup`.
    let cache_key = decoded.and_then(|d| CompactKey::from_rest_decoding(d.bytes, d.padded));
    let (lookup, ews_original) = match id.format {
        IdFormat::EwsId => (exchange_id::ews_to_rest(text), Some(text.to_owned())),
        _ => (text.to_owned(), None),
    };
    Some(Candidate {
        lookup,
        ews_original,
        format: id.format,
        mailbox_guid: id.mailbox_guid,
        cache_key,
    })
}

fn source_type(format: IdFormat) -> Option<SourceType> {
    match format {
        IdFormat::RestId => Some(SourceType::RestId),
        IdFormat::EwsId => Some(SourceType::EwsId),
        IdFormat::EntryId => Some(SourceType::EntryId),
        IdFormat::ImmutableEntryId
        | IdFormat::RestImmutableEntryId
        | IdFormat::ConversationId
        | IdFormat::HexEntryId => None,
    }
}

/// Everything translatable in a request target (path + query), deduplicated by `lookup`.
pub fn candidates_in_target(path_and_query: &str, sources: &[SourceType]) -> Vec<Candidate> {
    let mut found = Candidates::new(sources);
    for site in sites_in_target(path_and_query) {
        found.offer(&site.text);
    }
    found.list
}

/// Every string value of a JSON body that is translatable, deduplicated by `lookup`.
pub fn candidates_in_json(
    body: &[u8],
    sources: &[SourceType],
) -> Result<Vec<Candidate>, ScanError> {
    Ok(scan_json(body, sources)?.candidates)
}

/// The candidates in a `$batch` body's sub-request `url`s and `body`s; `None` when the body
/// is not a JSON object with a `requests` array.
pub fn candidates_in_batch(body: &[u8], sources: &[SourceType]) -> Option<Vec<Candidate>> {
    let mut batch: Value = serde_json::from_slice(body).ok()?;
    let mut found = Candidates::new(sources);
    edit_batch(&mut batch, |_, field, text| {
        match field {
            BatchField::Url => {
                for site in sites_in_target(text) {
                    found.offer(&site.text);
                }
            }
            BatchField::Body => found.offer(text),
        }
        None
    })?;
    Some(found.list)
}

/// The candidates in a response body, only under `RESPONSE_ID_KEYS`.
pub fn candidates_in_response(
    body: &[u8],
    sources: &[SourceType],
) -> Result<Vec<Candidate>, ScanError> {
    Ok(scan_response(body, sources)?.candidates)
}

/// Applies `map` (lookup form -> immutable ID) to a request target. Unmapped candidates are
/// left as they were. `None` when nothing changed; else the new target and the count of
/// replaced IDs.
pub fn rewrite_target(
    path_and_query: &str,
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, usize)> {
    apply_to_target(path_and_query, sources, map).map(Rewritten::into_counted)
}

/// Applies `map` to every translatable string value of a JSON body; the rest of the body is
/// kept byte for byte. `Err` when the body is not JSON (forward it unchanged).
pub fn rewrite_json(
    body: &[u8],
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Vec<u8>, usize)>, ScanError> {
    Ok(apply_to_json(body, sources, map)?.map(Rewritten::into_counted))
}

/// Applies `map` to the `url` and `body` of every `$batch` sub-request. `None` when the body
/// is not a batch or nothing changed.
pub fn rewrite_batch(
    body: &[u8],
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Option<(Vec<u8>, usize)> {
    apply_to_batch(body, sources, map).map(Rewritten::into_counted)
}

/// Response side (`rewrite.responses`): regular item IDs that Graph still returns (from
/// `$search`, `/search/query`) become immutable, only under `RESPONSE_ID_KEYS`.
pub fn rewrite_response(
    body: &[u8],
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Vec<u8>, usize)>, ScanError> {
    Ok(apply_to_response(body, sources, map)?.map(Rewritten::into_counted))
}

/// `rewrite_target` that also says which IDs it replaced.
pub fn apply_to_target(
    path_and_query: &str,
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Option<Rewritten<String>> {
    let mut applier = Applier::new(sources, map);
    let output = applier.target(path_and_query)?;
    Some(Rewritten {
        output,
        applied: applier.applied,
    })
}

/// `rewrite_json` that also says which IDs it replaced.
pub fn apply_to_json(
    body: &[u8],
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Rewritten<Vec<u8>>>, ScanError> {
    Ok(scan_json(body, sources)?.apply(body, map))
}

/// A JSON body scanned once: the candidates to look up and the byte range of every string
/// that holds one, so the answers are spliced in without scanning or classifying again.
/// Step 3 scans, resolves `candidates()`, then calls `apply` on the same bytes.
#[derive(Debug, Default)]
pub struct JsonIds {
    /// Deduplicated by `lookup`, in the order first found.
    candidates: Vec<Candidate>,
    /// (span of the JSON string, quotes included; index into `candidates`), in body order.
    sites: Vec<(Range<usize>, usize)>,
}

/// Scans a JSON request body for translatable string values (`scan_json`), or only the
/// values of `RESPONSE_ID_KEYS` in a response (`scan_response`).
pub fn scan_json(body: &[u8], sources: &[SourceType]) -> Result<JsonIds, ScanError> {
    scan_strings(body, sources, false)
}

/// `scan_json` for a response body: only strings under `RESPONSE_ID_KEYS` count.
pub fn scan_response(body: &[u8], sources: &[SourceType]) -> Result<JsonIds, ScanError> {
    scan_strings(body, sources, true)
}

fn scan_strings(
    body: &[u8],
    sources: &[SourceType],
    response_keys_only: bool,
) -> Result<JsonIds, ScanError> {
    let mut ids = JsonIds::default();
    let mut index = LookupIndex::default();
    let mut scratch = [0u8; exchange_id::MAX_DECODED_LEN];
    json_scan::visit_strings(body, |context, text, span| {
        if response_keys_only && !is_response_id_key(context.key) {
            return;
        }
        let Some(candidate) = candidate_decoding(text, sources, &mut scratch) else {
            return;
        };
        let at = index.position_or_push(&mut ids.candidates, candidate);
        ids.sites.push((span, at));
    })?;
    Ok(ids)
}

/// Deduplicates candidates by `lookup` without keeping a second copy of each one's text:
/// it maps the hash of a `lookup` to the first candidate with that hash and chains any
/// later ones with the same hash, so two IDs that collide in 64 bits are still told apart
/// by comparing the texts.
#[derive(Default)]
struct LookupIndex {
    state: hashing::State,
    first: hashing::Map<u64, usize>,
    /// For candidate `i`, the next candidate whose `lookup` has the same hash.
    next: Vec<Option<usize>>,
}

impl LookupIndex {
    /// Where `candidates` holds one with `candidate.lookup`; when none does, it is
    /// appended (`candidates` must only ever grow through this index).
    fn position_or_push(&mut self, candidates: &mut Vec<Candidate>, candidate: Candidate) -> usize {
        let hash = self.state.hash_one(candidate.lookup.as_str());
        self.position_or_push_hashed(candidates, candidate, hash)
    }

    /// `position_or_push` with the hash given (tests force collisions through it).
    fn position_or_push_hashed(
        &mut self,
        candidates: &mut Vec<Candidate>,
        candidate: Candidate,
        hash: u64,
    ) -> usize {
        let mut at = self.first.get(&hash).copied();
        let mut last = None;
        while let Some(i) = at {
            if candidates
                .get(i)
                .is_some_and(|c| c.lookup == candidate.lookup)
            {
                return i;
            }
            last = Some(i);
            at = self.next.get(i).copied().flatten();
        }
        let new = candidates.len();
        candidates.push(candidate);
        self.next.push(None);
        match last.and_then(|i| self.next.get_mut(i)) {
            Some(link) => *link = Some(new),
            None => {
                self.first.insert(hash, new);
            }
        }
        new
    }
}

impl JsonIds {
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Splices `map`'s answers into `body` (the bytes that were scanned); every other byte
    /// is kept. `None` when nothing changed. An answer equal to the ID as found, or not
    /// ID-shaped, is no change.
    pub fn apply(
        &self,
        body: &[u8],
        map: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Rewritten<Vec<u8>>> {
        // One answer per distinct ID, asked once.
        let answers: Vec<Option<String>> = self
            .candidates
            .iter()
            .map(|c| (map)(&c.lookup).filter(|new| self.usable(c, new)))
            .collect();
        let mut applied = Vec::new();
        let output = self.splice(body, &answers, |candidate, immutable| {
            applied.push(Replacement {
                lookup: candidate.lookup.clone(),
                immutable: immutable.to_owned(),
                place: Place::JsonString,
                batch_request_id: None,
            });
        })?;
        Some(Rewritten { output, applied })
    }

    /// `apply` for a caller that only counts the replacements (step 3 on a JSON body):
    /// the answers are borrowed from the caller's map and no `Replacement` is built, so
    /// nothing is copied per ID. The bytes are exactly those of `apply`.
    pub fn apply_counted<'m>(
        &self,
        body: &[u8],
        map: &dyn Fn(&str) -> Option<&'m str>,
    ) -> Option<(Vec<u8>, usize)> {
        let answers: Vec<Option<&str>> = self
            .candidates
            .iter()
            .map(|c| (map)(&c.lookup).filter(|new| self.usable(c, new)))
            .collect();
        let mut count = 0;
        let output = self.splice(body, &answers, |_, _| count += 1)?;
        Some((output, count))
    }

    fn usable(&self, candidate: &Candidate, answer: &str) -> bool {
        answer != candidate.original() && is_id_shaped(answer)
    }

    /// Writes `body` with `answers[i]` (one per candidate) at every site of candidate `i`
    /// that has one, calling `replaced` for each; `None` when no site had an answer.
    fn splice<A: AsRef<str>>(
        &self,
        body: &[u8],
        answers: &[Option<A>],
        mut replaced: impl FnMut(&Candidate, &str),
    ) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for (span, at) in &self.sites {
            let (Some(Some(immutable)), Some(candidate)) =
                (answers.get(*at), self.candidates.get(*at))
            else {
                continue;
            };
            // Sites come in body order and never overlap; the check keeps a caller that
            // passes other bytes from splicing out of range.
            let Some(before) = body.get(copied..span.start) else {
                continue;
            };
            let out = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
            out.extend_from_slice(before);
            // Every answer passed `usable`, so it is ID-shaped: none of its characters needs
            // a JSON escape, and it goes in between quotes as it is (what `push_quoted`
            // would write, without searching it for escapes).
            out.push(b'"');
            out.extend_from_slice(immutable.as_ref().as_bytes());
            out.push(b'"');
            copied = span.end;
            replaced(candidate, immutable.as_ref());
        }
        let mut output = out?;
        output.extend_from_slice(body.get(copied..).unwrap_or_default());
        Some(output)
    }
}

/// `rewrite_batch` that also says which IDs it replaced, with their sub-request `id`s.
///
/// A batch body is parsed and re-serialised (serde_json, `preserve_order`), as
/// `batch::apply_prefer` does anyway: key and request order survive, insignificant
/// whitespace and number spelling may not. Only done when something was replaced.
/// A sub-request `url` that is absolute (has a scheme) is not a request target and is left
/// alone; Graph requires relative ones.
pub fn apply_to_batch(
    body: &[u8],
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Option<Rewritten<Vec<u8>>> {
    let mut batch: Value = serde_json::from_slice(body).ok()?;
    let mut applier = Applier::new(sources, map);
    edit_batch(&mut batch, |request_id, field, text| {
        applier.batch_request_id = request_id.map(str::to_owned);
        match field {
            BatchField::Url => applier.target(text),
            BatchField::Body => applier.replace(text, Place::JsonString),
        }
    })?;
    if applier.applied.is_empty() {
        return None;
    }
    let output = serde_json::to_vec(&batch).ok()?;
    Some(Rewritten {
        output,
        applied: applier.applied,
    })
}

/// `rewrite_response` that also says which IDs it replaced.
pub fn apply_to_response(
    body: &[u8],
    sources: &[SourceType],
    map: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Rewritten<Vec<u8>>>, ScanError> {
    Ok(scan_response(body, sources)?.apply(body, map))
}

/// The mappings a 404 answer is about, so the caller can evict them: the IDs put into the
/// path of the request (for a `$batch` sub-response, `batch_request_id` names the
/// sub-request). IDs in `$filter` or bodies do not make Graph answer 404 for the request.
pub fn not_found_evictions<'a>(
    applied: &'a [Replacement],
    batch_request_id: Option<&str>,
) -> Vec<&'a Replacement> {
    applied
        .iter()
        .filter(|r| {
            r.place == Place::PathSegment && r.batch_request_id.as_deref() == batch_request_id
        })
        .collect()
}

impl<T> Rewritten<T> {
    fn into_counted(self) -> (T, usize) {
        (self.output, self.applied.len())
    }
}

fn is_response_id_key(key: Option<&str>) -> bool {
    key.is_some_and(|key| RESPONSE_ID_KEYS.contains(&key))
}

/// Collects candidates in the order found, once per `lookup`.
struct Candidates<'s> {
    sources: &'s [SourceType],
    index: LookupIndex,
    scratch: DecodeBuffer,
    list: Vec<Candidate>,
}

impl<'s> Candidates<'s> {
    fn new(sources: &'s [SourceType]) -> Self {
        Candidates {
            sources,
            index: LookupIndex::default(),
            scratch: [0u8; exchange_id::MAX_DECODED_LEN],
            list: Vec::new(),
        }
    }

    fn offer(&mut self, text: &str) {
        if let Some(candidate) = candidate_decoding(text, self.sources, &mut self.scratch) {
            self.index.position_or_push(&mut self.list, candidate);
        }
    }
}

/// Asks the map for each candidate and records what it replaced.
struct Applier<'a> {
    sources: &'a [SourceType],
    map: &'a dyn Fn(&str) -> Option<String>,
    batch_request_id: Option<String>,
    applied: Vec<Replacement>,
    scratch: DecodeBuffer,
}

impl<'a> Applier<'a> {
    fn new(sources: &'a [SourceType], map: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Applier {
            sources,
            map,
            batch_request_id: None,
            applied: Vec::new(),
            scratch: [0u8; exchange_id::MAX_DECODED_LEN],
        }
    }

    /// The immutable ID to put where `text` is, if there is one and it differs.
    fn replace(&mut self, text: &str, place: Place) -> Option<String> {
        let candidate = candidate_decoding(text, self.sources, &mut self.scratch)?;
        let immutable = (self.map)(&candidate.lookup)?;
        if immutable == text || !is_id_shaped(&immutable) {
            return None;
        }
        self.applied.push(Replacement {
            lookup: candidate.lookup,
            immutable: immutable.clone(),
            place,
            batch_request_id: self.batch_request_id.clone(),
        });
        Some(immutable)
    }

    /// The target with every mapped site replaced; `None` when none was.
    fn target(&mut self, target: &str) -> Option<String> {
        let applied_before = self.applied.len();
        let mut out = String::new();
        let mut copied = 0usize;
        for site in sites_in_target(target) {
            // Sites are in order and disjoint; the check keeps a surprise from splicing twice.
            let Some(before) = target.get(copied..site.range.start) else {
                continue;
            };
            let Some(immutable) = self.replace(&site.text, site.place) else {
                continue;
            };
            out.push_str(before);
            out.extend(utf8_percent_encode(&immutable, URL_ESCAPED));
            copied = site.range.end;
        }
        match target.get(copied..) {
            Some(tail) if copied > 0 => {
                out.push_str(tail);
                Some(out)
            }
            _ => {
                self.applied.truncate(applied_before);
                None
            }
        }
    }
}

fn is_id_shaped(text: &str) -> bool {
    // One table load and one AND a byte: the eight comparisons of `is_id_char` were not
    // vectorised, and cost four instructions a byte of every answer spliced in.
    !text.is_empty()
        && text.len() <= MAX_REPLACEMENT_LEN
        && text
            .bytes()
            .fold(true, |shaped, c| shaped & ID_CHARS[usize::from(c)])
}

/// `is_id_char` of every byte value.
static ID_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = is_id_char(c as u8);
        c += 1;
    }
    table
};

/// `[A-Za-z0-9_=+/-]`.
const fn is_id_char(c: u8) -> bool {
    (c.wrapping_sub(b'A') < 26)
        | (c.wrapping_sub(b'a') < 26)
        | (c.wrapping_sub(b'0') < 10)
        | (c == b'-')
        | (c == b'_')
        | (c == b'=')
        | (c == b'+')
        | (c == b'/')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchField {
    Url,
    Body,
}

/// Calls `edit(request id, field, text)` for each sub-request's string `url` and for every
/// string inside its `body`, in document order, and stores what it returns. `None` when
/// the body is not a batch. serde_json caps nesting at 128 while parsing, and the walk uses
/// an explicit stack, so no input can overflow the stack.
fn edit_batch(
    batch: &mut Value,
    mut edit: impl FnMut(Option<&str>, BatchField, &str) -> Option<String>,
) -> Option<()> {
    let requests = batch.as_object_mut()?.get_mut("requests")?.as_array_mut()?;
    for request in requests.iter_mut().filter_map(Value::as_object_mut) {
        let request_id = request.get("id").and_then(Value::as_str).map(str::to_owned);
        let request_id = request_id.as_deref();
        if let Some(Value::String(url)) = request.get_mut("url") {
            if let Some(new) = edit(request_id, BatchField::Url, url) {
                *url = new;
            }
        }
        let Some(body) = request.get_mut("body") else {
            continue;
        };
        let mut stack: Vec<&mut Value> = vec![body];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(text) => {
                    if let Some(new) = edit(request_id, BatchField::Body, text) {
                        *text = new;
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut().rev()),
                Value::Object(members) => {
                    let mut values: Vec<&mut Value> = members.values_mut().collect();
                    values.reverse();
                    stack.extend(values);
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }
    Some(())
}

/// A place in a request target that may hold an ID: `range` is the raw (still encoded)
/// text to replace, `text` what it decodes to.
struct Site {
    range: Range<usize>,
    text: String,
    place: Place,
}

/// The ID-shaped path segments and `$filter` literals on `id` of a target, in order.
fn sites_in_target(target: &str) -> Vec<Site> {
    let path_end = target.find(['?', '#']).unwrap_or(target.len());
    let (path, after_path) = target.split_at(path_end);
    let mut sites = Vec::new();
    // A scheme before the first `/` makes this an absolute URL, not a target we own.
    if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return sites;
    }
    let mut offset = 0usize;
    for segment in path.split('/') {
        if let Some(site) = path_segment_site(segment, offset) {
            sites.push(site);
        }
        offset += segment.len() + 1;
    }
    if let Some(query) = after_path.strip_prefix('?') {
        let query = query.split('#').next().unwrap_or_default();
        let mut offset = path_end + 1;
        for parameter in query.split('&') {
            filter_sites(parameter, offset, &mut sites);
            offset += parameter.len() + 1;
        }
    }
    sites
}

/// The ID inside one path segment (bare, percent-encoded, `name('...')` or `'...'`), with
/// the raw range of just the key so that the OData syntax around it survives.
fn path_segment_site(segment: &str, offset: usize) -> Option<Site> {
    let id = exchange_id::id_in_path_segment(segment)?;
    let decoded = Decoded::new(segment, false);
    let bytes = decoded.bytes.as_slice();
    let end = if bytes.ends_with(b"')") {
        bytes.len() - 2
    } else if bytes.len() >= 2 && bytes.starts_with(b"'") && bytes.ends_with(b"'") {
        bytes.len() - 1
    } else {
        bytes.len()
    };
    let start = end.checked_sub(id.len())?;
    if bytes.get(start..end)? != id.as_bytes() {
        return None;
    }
    let raw = decoded.raw_range(start..end)?;
    Some(Site {
        range: offset + raw.start..offset + raw.end,
        text: id.into_owned(),
        place: Place::PathSegment,
    })
}

/// The literals compared with `id` in one `name=value` query parameter, if its name is a
/// filter option: `id eq '...'`, `'...' eq id`, `id ne '...'`, `id in ('...', ...)`.
fn filter_sites(parameter: &str, offset: usize, sites: &mut Vec<Site>) {
    let Some((name, value)) = parameter.split_once('=') else {
        return;
    };
    let name = Decoded::new(name, true);
    if !FILTER_OPTIONS
        .iter()
        .any(|option| name.bytes.eq_ignore_ascii_case(option.as_bytes()))
    {
        return;
    }
    let value_offset = offset + name.raw_len + 1;
    let decoded = Decoded::new(value, true);
    for literal in id_literals(&decoded.bytes) {
        let (Some(raw), Some(text)) = (
            decoded.raw_range(literal.clone()),
            decoded
                .bytes
                .get(literal)
                .and_then(|b| std::str::from_utf8(b).ok()),
        ) else {
            continue;
        };
        sites.push(Site {
            range: value_offset + raw.start..value_offset + raw.end,
            text: text.to_owned(),
            place: Place::FilterLiteral,
        });
    }
}

/// Percent-decoded text with, for each decoded byte, where it started in the raw text, so a
/// decoded range can be mapped back and only that part of the raw text replaced.
struct Decoded {
    bytes: Vec<u8>,
    /// `starts[i]` is the raw offset of decoded byte `i`; one extra entry holds the end.
    starts: Vec<usize>,
    raw_len: usize,
}

impl Decoded {
    /// Malformed escapes stay literal `%`, as lenient servers read them; `+` is a space
    /// only in a query string.
    fn new(raw: &str, plus_is_space: bool) -> Self {
        let raw_bytes = raw.as_bytes();
        let mut bytes = Vec::with_capacity(raw_bytes.len());
        let mut starts = Vec::with_capacity(raw_bytes.len() + 1);
        let mut i = 0usize;
        while let Some(&c) = raw_bytes.get(i) {
            starts.push(i);
            let escaped = (c == b'%')
                .then(|| Some((hex(*raw_bytes.get(i + 1)?)? << 4) | hex(*raw_bytes.get(i + 2)?)?))
                .flatten();
            match escaped {
                Some(byte) => {
                    bytes.push(byte);
                    i += 3;
                }
                None => {
                    bytes.push(if plus_is_space && c == b'+' { b' ' } else { c });
                    i += 1;
                }
            }
        }
        starts.push(raw_bytes.len());
        Decoded {
            bytes,
            starts,
            raw_len: raw_bytes.len(),
        }
    }

    fn raw_range(&self, decoded: Range<usize>) -> Option<Range<usize>> {
        Some(*self.starts.get(decoded.start)?..*self.starts.get(decoded.end)?)
    }
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A token of an OData filter expression, holding decoded byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Property paths, operators, keywords and numbers.
    Word(Range<usize>),
    /// The content of a `'...'` literal, between the quotes.
    Literal(Range<usize>),
    Open,
    Close,
    Comma,
    Other,
}

/// Decoded ranges of the literals compared with the `id` property. Only the three shapes
/// in `filter_sites` count; `a/id` (a lambda variable's property) or anything else is not
/// the item's own id and is left alone.
fn id_literals(filter: &[u8]) -> Vec<Range<usize>> {
    let tokens = filter_tokens(filter);
    let word_is = |range: &Range<usize>, expected: &str| {
        filter
            .get(range.clone())
            .is_some_and(|word| word.eq_ignore_ascii_case(expected.as_bytes()))
    };
    let is_comparison = |range: &Range<usize>| word_is(range, "eq") || word_is(range, "ne");
    let mut literals = Vec::new();
    for k in 0..tokens.len() {
        match tokens.get(k..).unwrap_or_default() {
            [Token::Word(property), Token::Word(op), Token::Literal(literal), ..]
                if word_is(property, "id") && is_comparison(op) =>
            {
                literals.push(literal.clone());
            }
            [Token::Literal(literal), Token::Word(op), Token::Word(property), ..]
                if word_is(property, "id")
                    && is_comparison(op)
                    && literals.last() != Some(literal) =>
            {
                literals.push(literal.clone());
            }
            [Token::Word(property), Token::Word(op), Token::Open, rest @ ..]
                if word_is(property, "id") && word_is(op, "in") =>
            {
                literals.extend(in_list(rest));
            }
            _ => {}
        }
    }
    literals
}

/// The literals of `'a', 'b')`; nothing unless the list is well-formed up to its `)`.
fn in_list(tokens: &[Token]) -> Vec<Range<usize>> {
    let mut literals = Vec::new();
    let mut rest = tokens;
    loop {
        match rest {
            [Token::Literal(literal), Token::Comma, tail @ ..] => {
                literals.push(literal.clone());
                rest = tail;
            }
            [Token::Literal(literal), Token::Close, ..] => {
                literals.push(literal.clone());
                return literals;
            }
            _ => return Vec::new(),
        }
    }
}

fn filter_tokens(filter: &[u8]) -> Vec<Token> {
    let is_word = |c: u8| {
        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'$' | b'@' | b'-' | b':')
    };
    let mut tokens = Vec::new();
    let mut i = 0usize;
    while let Some(&c) = filter.get(i) {
        match c {
            b' ' | b'\t' => i += 1,
            b'(' | b')' | b',' => {
                tokens.push(match c {
                    b'(' => Token::Open,
                    b')' => Token::Close,
                    _ => Token::Comma,
                });
                i += 1;
            }
            b'\'' => {
                // `''` inside a literal is an escaped quote, never the end.
                let start = i + 1;
                let mut j = start;
                loop {
                    match (filter.get(j), filter.get(j + 1)) {
                        (Some(b'\''), Some(b'\'')) => j += 2,
                        (Some(b'\''), _) => break,
                        (Some(_), _) => j += 1,
                        (None, _) => {
                            // Unterminated: nothing after this can be read reliably.
                            tokens.push(Token::Other);
                            return tokens;
                        }
                    }
                }
                tokens.push(Token::Literal(start..j));
                i = j + 1;
            }
            c if is_word(c) => {
                let start = i;
                while filter.get(i).is_some_and(|&c| is_word(c)) {
                    i += 1;
                }
                tokens.push(Token::Word(start..i));
            }
            _ => {
                tokens.push(Token::Other);
                i += 1;
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    use crate::id_samples::*;

    /// Stand-ins for the immutable IDs translateExchangeIds would return (any ID-shaped
    /// text will do for this module; these two have the immutable prefix).
    const IMM_FOR_SEARCH: &str =
        "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AGnUPtcQC-Eiwmc39SmMpPgAAA8ZAfwAA";
    const IMM_FOR_RLE: &str =
        "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AGnUPtcQC-Eiwmc39SmMpPgAAA8ZAgAAA";
    const IMM_FOR_ENTRY: &str =
        "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AGnUPtcQC-Eiwmc39SmMpPgAAA8ZAgQAA";

    const ALL: [SourceType; 3] = [SourceType::RestId, SourceType::EwsId, SourceType::EntryId];

    /// The map translateExchangeIds would give for the item samples.
    fn known(lookup: &str) -> Option<String> {
        let rest_search = exchange_id::ews_to_rest(EWS_MSG_SEARCH);
        let answer = match lookup {
            REST_MSG => IMM,
            REST_RLE_MSG => IMM_FOR_RLE,
            ENTRYID => IMM_FOR_ENTRY,
            other if other == rest_search => IMM_FOR_SEARCH,
            _ => return None,
        };
        Some(answer.to_owned())
    }

    fn nothing(_: &str) -> Option<String> {
        None
    }

    /// `known` as a map, for `apply_counted`, which borrows its answers.
    fn known_map() -> HashMap<String, String> {
        let rest_search = exchange_id::ews_to_rest(EWS_MSG_SEARCH);
        [REST_MSG, REST_RLE_MSG, ENTRYID, rest_search.as_str()]
            .into_iter()
            .filter_map(|regular| Some((regular.to_owned(), known(regular)?)))
            .collect()
    }

    /// `apply_counted` writes exactly what `apply` writes and counts its replacements.
    fn assert_counted_agrees(scan: &JsonIds, body: &[u8], map: &HashMap<String, String>) {
        let owned = |id: &str| map.get(id).cloned();
        let borrowed = |id: &str| map.get(id).map(String::as_str);
        assert_eq!(
            scan.apply_counted(body, &borrowed),
            scan.apply(body, &owned)
                .map(|r| (r.output, r.applied.len()))
        );
    }

    /// The deduplication `LookupIndex` replaced: a set of copied `lookup`s.
    fn dedupe_reference(candidates: &[Candidate]) -> (Vec<Candidate>, Vec<usize>) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut list = Vec::new();
        let mut positions = Vec::new();
        for c in candidates {
            let at = *seen.entry(c.lookup.clone()).or_insert_with(|| {
                list.push(c.clone());
                list.len() - 1
            });
            positions.push(at);
        }
        (list, positions)
    }

    fn sample_candidates() -> Vec<Candidate> {
        [REST_MSG, REST_RLE_MSG, ENTRYID, EWS_MSG_SEARCH]
            .iter()
            .map(|id| candidate_for(id, &ALL).expect("an item"))
            .collect()
    }

    #[test]
    fn lookup_index_tells_colliding_hashes_apart() {
        let samples = sample_candidates();
        let order = [0, 1, 0, 2, 3, 1, 3, 2, 0];
        let offered: Vec<Candidate> = order.iter().map(|&i| samples[i].clone()).collect();
        let (expected, expected_positions) = dedupe_reference(&offered);
        // Every hash the same: only the chain of text comparisons keeps the IDs apart.
        for hash_of in [|_: usize| 7u64, |i: usize| i as u64 % 2] {
            let mut index = LookupIndex::default();
            let mut list = Vec::new();
            let positions: Vec<usize> = order
                .iter()
                .map(|&i| index.position_or_push_hashed(&mut list, samples[i].clone(), hash_of(i)))
                .collect();
            assert_eq!(list, expected);
            assert_eq!(positions, expected_positions);
        }
    }

    #[test]
    fn id_shape_agrees_with_a_plain_check_at_every_length_and_position() {
        let plain = |text: &str| {
            !text.is_empty() && text.len() <= MAX_REPLACEMENT_LEN && text.bytes().all(is_id_char)
        };
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 68, 152, 699, 700, 701] {
            let good = "A".repeat(len);
            assert_eq!(is_id_shaped(&good), plain(&good), "{len}");
            for at in 0..len.min(70) {
                for bad in ['"', ' ', '.', '%', 'é'] {
                    let mut text = good.clone();
                    text.replace_range(at..at + 1, &bad.to_string());
                    assert_eq!(is_id_shaped(&text), plain(&text), "{len} {at} {bad}");
                }
            }
        }
    }

    #[test]
    fn id_characters_are_exactly_the_two_alphabets_and_padding() {
        for c in 0..=u8::MAX {
            let expected = c.is_ascii_alphanumeric() || b"-_=+/".contains(&c);
            assert_eq!(is_id_char(c), expected, "{c}");
            assert_eq!(ID_CHARS[usize::from(c)], expected, "{c}");
        }
    }

    #[test]
    fn counted_splice_agrees_with_the_full_one() {
        let body = format!(
            r#"{{"a":"{REST_MSG}","b":["{ENTRYID}","{REST_MSG}","{REST_FOLDER}"],"c":"{IMM}"}}"#
        );
        let scan = scan_json(body.as_bytes(), &ALL).expect("json");
        assert_counted_agrees(&scan, body.as_bytes(), &known_map());
        assert_counted_agrees(&scan, body.as_bytes(), &HashMap::new());
        let same: HashMap<String, String> = [(REST_MSG.to_owned(), REST_MSG.to_owned())]
            .into_iter()
            .collect();
        assert_counted_agrees(&scan, body.as_bytes(), &same);
        let bad: HashMap<String, String> = [(REST_MSG.to_owned(), "a\"b".to_owned())]
            .into_iter()
            .collect();
        assert_counted_agrees(&scan, body.as_bytes(), &bad);
        let borrowed = |id: &str| known_map().contains_key(id).then_some(IMM);
        assert_eq!(
            scan.apply_counted(body.as_bytes(), &borrowed)
                .map(|(_, n)| n),
            Some(3)
        );
    }

    fn lookups(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| c.lookup.as_str()).collect()
    }

    #[test]
    fn percent_encoded_padding_in_a_path_is_replaced_and_stays_encoded() {
        let target = format!(
            "/v1.0/me/messages/{}?$select=subject",
            REST_MSG.replace('=', "%3D")
        );
        let candidates = candidates_in_target(&target, &ALL);
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].original(), REST_MSG);
        assert_eq!(candidates[0].lookup, REST_MSG);
        assert_eq!(candidates[0].format, IdFormat::RestId);
        assert_eq!(
            candidates[0].mailbox_guid.map(|g| g.to_string()).as_deref(),
            Some("80734d9e-5abb-456d-b0b8-1b9029d643e9")
        );
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((format!("/v1.0/me/messages/{IMM}?$select=subject"), 1))
        );
    }

    #[test]
    fn raw_padding_in_a_path_is_written_back_encoded() {
        let target = format!("/v1.0/me/messages/{REST_MSG}/attachments");
        let replace_with_padding = |_: &str| Some(format!("{IMM}=="));
        assert_eq!(
            rewrite_target(&target, &ALL, &replace_with_padding),
            Some((format!("/v1.0/me/messages/{IMM}%3D%3D/attachments"), 1))
        );
    }

    #[test]
    fn odata_key_syntax_is_kept_around_the_replacement() {
        let target = format!("/v1.0/me/messages('{REST_MSG}')/attachments");
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((format!("/v1.0/me/messages('{IMM}')/attachments"), 1))
        );
        let encoded = format!(
            "/v1.0/me/messages%28%27{}%27%29",
            REST_MSG.replace('=', "%3d")
        );
        assert_eq!(
            rewrite_target(&encoded, &ALL, &known),
            Some((format!("/v1.0/me/messages%28%27{IMM}%27%29"), 1))
        );
    }

    #[test]
    fn folder_segment_stays_and_message_segment_is_replaced() {
        let target = format!(
            "/v1.0/users/{UPN}/mailFolders/{}/messages/{}",
            REST_FOLDER.replace('=', "%3D"),
            REST_MSG.replace('=', "%3D")
        );
        assert_eq!(lookups(&candidates_in_target(&target, &ALL)), [REST_MSG]);
        let folder_answer = |lookup: &str| (lookup == REST_FOLDER).then(|| IMM.to_owned());
        assert_eq!(rewrite_target(&target, &ALL, &folder_answer), None);
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((
                format!(
                    "/v1.0/users/{UPN}/mailFolders/{}/messages/{IMM}",
                    REST_FOLDER.replace('=', "%3D")
                ),
                1
            ))
        );
    }

    #[test]
    fn ews_id_in_a_path_is_looked_up_in_rest_form_and_never_left_with_a_raw_slash() {
        let encoded = EWS_MSG_SEARCH.replace('/', "%2F").replace('=', "%3D");
        let target = format!("/v1.0/me/events/{encoded}");
        let candidates = candidates_in_target(&target, &ALL);
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].original(), EWS_MSG_SEARCH);
        assert_eq!(
            candidates[0].lookup,
            exchange_id::ews_to_rest(EWS_MSG_SEARCH)
        );
        assert_eq!(candidates[0].format, IdFormat::EwsId);
        assert_eq!(candidates[0].source_id_type(), IdFormat::RestId);
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((format!("/v1.0/me/events/{IMM_FOR_SEARCH}"), 1))
        );
        let as_rest = |lookup: &str| Some(lookup.to_owned());
        let (rewritten, _) = rewrite_target(&target, &ALL, &as_rest).expect("alphabet swapped");
        assert!(!rewritten["/v1.0/me/events/".len()..].contains(['/', '+', '=']));
    }

    #[test]
    fn unmapped_ews_id_keeps_its_original_spelling() {
        let body = format!(r#"{{"id":"{EWS_MSG_SEARCH}"}}"#);
        assert_eq!(rewrite_json(body.as_bytes(), &ALL, &nothing), Ok(None));
        let target = format!("/v1.0/me/messages/{}", EWS_MSG_SEARCH.replace('/', "%2F"));
        assert_eq!(rewrite_target(&target, &ALL, &nothing), None);
    }

    #[test]
    fn filter_literal_on_id_is_replaced_and_every_other_query_byte_kept() {
        let target = format!(
            "/v1.0/me/messages?$select=id,subject&%24filter=id%20eq%20%27{}%27%20and%20isRead+eq+false&$top=5",
            REST_MSG.replace('=', "%3D")
        );
        assert_eq!(lookups(&candidates_in_target(&target, &ALL)), [REST_MSG]);
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((
                format!(
                    "/v1.0/me/messages?$select=id,subject&%24filter=id%20eq%20%27{IMM}%27%20and%20isRead+eq+false&$top=5"
                ),
                1
            ))
        );
    }

    #[test]
    fn filter_with_plus_spaces_and_reversed_operands_is_understood() {
        let target = format!("/v1.0/me/messages?$filter='{REST_MSG}'+eq+id");
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((format!("/v1.0/me/messages?$filter='{IMM}'+eq+id"), 1))
        );
    }

    #[test]
    fn filter_in_list_replaces_each_mapped_item_literal() {
        let target =
            format!("/v1.0/me/messages?$filter=id in ('{REST_MSG}', '{REST_FOLDER}','{ENTRYID}')");
        assert_eq!(
            lookups(&candidates_in_target(&target, &ALL)),
            [REST_MSG, ENTRYID]
        );
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((
                format!(
                    "/v1.0/me/messages?$filter=id in ('{IMM}', '{REST_FOLDER}','{IMM_FOR_ENTRY}')"
                ),
                2
            ))
        );
    }

    #[test]
    fn literals_not_compared_with_id_are_left_alone() {
        for target in [
            format!("/v1.0/me/messages?$filter=conversationId eq '{REST_MSG}'"),
            format!("/v1.0/me/messages?$filter=attachments/any(a:a/id eq '{REST_MSG}')"),
            format!("/v1.0/me/messages?$search=\"{REST_MSG}\""),
            format!("/v1.0/me/messages?$filter=id gt '{REST_MSG}'"),
            format!("/v1.0/me/messages?$filter=id in ('{REST_MSG}'"),
            format!("/v1.0/me/messages?$orderby=id eq '{REST_MSG}'"),
        ] {
            assert_eq!(candidates_in_target(&target, &ALL), vec![], "{target}");
            assert_eq!(rewrite_target(&target, &ALL, &known), None, "{target}");
        }
    }

    #[test]
    fn literal_between_two_id_comparisons_is_replaced_once() {
        let target = format!("/v1.0/me/messages?$filter=id eq '{REST_MSG}' eq id");
        assert_eq!(
            apply_to_target(&target, &ALL, &known).map(|r| (r.output, r.applied.len())),
            Some((format!("/v1.0/me/messages?$filter=id eq '{IMM}' eq id"), 1))
        );
    }

    #[test]
    fn path_and_filter_ids_are_deduplicated_by_lookup_form() {
        let target = format!(
            "/v1.0/me/messages/{}?$filter=id eq '{}' or id eq '{REST_MSG}'",
            REST_MSG.replace('=', "%3D"),
            REST_MSG.replace('=', "%3D")
        );
        assert_eq!(lookups(&candidates_in_target(&target, &ALL)), [REST_MSG]);
        let (_, count) = rewrite_target(&target, &ALL, &known).expect("rewritten");
        assert_eq!(count, 3);
    }

    #[test]
    fn json_body_replaces_only_item_ids_and_keeps_every_other_byte() {
        let body = format!(
            "{{ \"message\" : {{\"id\": \"{REST_MSG}\", \"parentFolderId\":\"{REST_FOLDER}\",\n  \"conversationId\" :\"{CONV}\", \"n\": 1.50e0, \"list\": [\"{ENTRYID}\", \"{IMM}\", \"{GUID}\", \"{UPN}\", \"{CHANGEKEY}\", \"{REST_ATT}\", \"{REST_OCC}\", \"{IMMENTRYID}\", \"{HEXEID}\"]}}, \"x\": \"\\u00e9\" }}"
        );
        assert_eq!(
            lookups(&candidates_in_json(body.as_bytes(), &ALL).expect("json")),
            [REST_MSG, ENTRYID]
        );
        let expected = body.replace(REST_MSG, IMM).replace(ENTRYID, IMM_FOR_ENTRY);
        assert_eq!(
            rewrite_json(body.as_bytes(), &ALL, &known),
            Ok(Some((expected.into_bytes(), 2)))
        );
    }

    #[test]
    fn escaped_id_in_json_is_found_after_unescaping() {
        let escaped = EWS_MSG_SEARCH.replace('/', "\\/");
        let body = format!(r#"{{"itemId":"{escaped}"}}"#);
        assert_eq!(
            rewrite_json(body.as_bytes(), &ALL, &known),
            Ok(Some((
                format!(r#"{{"itemId":"{IMM_FOR_SEARCH}"}}"#).into_bytes(),
                1
            )))
        );
    }

    #[test]
    fn url_strings_in_a_body_are_never_touched() {
        let body = format!(
            r#"{{"uploadUrl":"https://outlook.office.com/api/v2.0/Users('x')/Messages('{REST_MSG}')/AttachmentSessions('y')","link":"/v1.0/me/messages/{REST_MSG}"}}"#
        );
        assert_eq!(candidates_in_json(body.as_bytes(), &ALL), Ok(vec![]));
        assert_eq!(rewrite_json(body.as_bytes(), &ALL, &known), Ok(None));
    }

    #[test]
    fn source_types_without_ews_leave_ews_ids_alone() {
        let body = format!(r#"{{"a":"{EWS_MSG_SEARCH}","b":"{REST_MSG}"}}"#);
        let rest_only = [SourceType::RestId];
        assert_eq!(
            lookups(&candidates_in_json(body.as_bytes(), &rest_only).expect("json")),
            [REST_MSG]
        );
        assert_eq!(
            rewrite_json(body.as_bytes(), &rest_only, &known),
            Ok(Some((
                format!(r#"{{"a":"{EWS_MSG_SEARCH}","b":"{IMM}"}}"#).into_bytes(),
                1
            )))
        );
        let ews_only = [SourceType::EwsId];
        assert_eq!(
            rewrite_json(body.as_bytes(), &ews_only, &known),
            Ok(Some((
                format!(r#"{{"a":"{IMM_FOR_SEARCH}","b":"{REST_MSG}"}}"#).into_bytes(),
                1
            )))
        );
        let target = format!("/v1.0/me/messages/{ENTRYID}");
        assert_eq!(rewrite_target(&target, &rest_only, &known), None);
    }

    #[test]
    fn rle_compressed_item_is_a_candidate_and_rle_folder_is_not() {
        let body = format!(r#"["{REST_RLE_MSG}","{EWS_RLE_FOLDER}"]"#);
        assert_eq!(
            lookups(&candidates_in_json(body.as_bytes(), &ALL).expect("json")),
            [REST_RLE_MSG]
        );
    }

    #[test]
    fn malformed_json_is_an_error_and_not_rewritten() {
        let body = format!(r#"{{"id":"{REST_MSG}""#);
        assert!(matches!(
            rewrite_json(body.as_bytes(), &ALL, &known),
            Err(ScanError::NotJson { .. })
        ));
        assert!(candidates_in_json(body.as_bytes(), &ALL).is_err());
        assert!(rewrite_response(body.as_bytes(), &ALL, &known).is_err());
        assert_eq!(rewrite_batch(body.as_bytes(), &ALL, &known), None);
    }

    #[test]
    fn batch_sub_request_url_and_body_are_rewritten() {
        let body = format!(
            r#"{{"requests":[{{"id":"1","method":"GET","url":"/me/messages/{}?$select=id"}},{{"id":"2","method":"PATCH","url":"me/mailFolders/{REST_FOLDER}","headers":{{"Content-Type":"application/json","X-Id":"{REST_MSG}"}},"body":{{"singleValueExtendedProperties":[{{"value":"{EWS_MSG_SEARCH}"}}],"parentFolderId":"{REST_FOLDER}"}}}}]}}"#,
            REST_MSG.replace('=', "%3D")
        );
        let candidates = candidates_in_batch(body.as_bytes(), &ALL).expect("a batch");
        assert_eq!(
            lookups(&candidates),
            [REST_MSG, exchange_id::ews_to_rest(EWS_MSG_SEARCH).as_str()]
        );
        let rewritten = apply_to_batch(body.as_bytes(), &ALL, &known).expect("rewritten");
        let expected = format!(
            r#"{{"requests":[{{"id":"1","method":"GET","url":"/me/messages/{IMM}?$select=id"}},{{"id":"2","method":"PATCH","url":"me/mailFolders/{REST_FOLDER}","headers":{{"Content-Type":"application/json","X-Id":"{REST_MSG}"}},"body":{{"singleValueExtendedProperties":[{{"value":"{IMM_FOR_SEARCH}"}}],"parentFolderId":"{REST_FOLDER}"}}}}]}}"#
        );
        assert_eq!(
            String::from_utf8(rewritten.output).expect("utf-8"),
            expected
        );
        assert_eq!(
            rewritten.applied,
            vec![
                Replacement {
                    lookup: REST_MSG.to_owned(),
                    immutable: IMM.to_owned(),
                    place: Place::PathSegment,
                    batch_request_id: Some("1".to_owned()),
                },
                Replacement {
                    lookup: exchange_id::ews_to_rest(EWS_MSG_SEARCH),
                    immutable: IMM_FOR_SEARCH.to_owned(),
                    place: Place::JsonString,
                    batch_request_id: Some("2".to_owned()),
                },
            ]
        );
        assert_eq!(
            rewrite_batch(body.as_bytes(), &ALL, &known).map(|(_, n)| n),
            Some(2)
        );
    }

    #[test]
    fn batch_without_ids_or_that_is_not_a_batch_gives_none() {
        let plain = br#"{"requests":[{"id":"1","method":"GET","url":"/me/messages?$top=1"}]}"#;
        assert_eq!(candidates_in_batch(plain, &ALL), Some(vec![]));
        assert_eq!(rewrite_batch(plain, &ALL, &known), None);
        let not_batch = format!(r#"{{"value":[{{"url":"/me/messages/{REST_MSG}"}}]}}"#);
        assert_eq!(candidates_in_batch(not_batch.as_bytes(), &ALL), None);
        assert_eq!(rewrite_batch(not_batch.as_bytes(), &ALL, &known), None);
    }

    #[test]
    fn absolute_batch_url_is_not_a_target() {
        let body = format!(
            r#"{{"requests":[{{"id":"1","method":"GET","url":"https://graph.microsoft.com/v1.0/me/messages/{REST_MSG}"}}]}}"#
        );
        assert_eq!(candidates_in_batch(body.as_bytes(), &ALL), Some(vec![]));
        assert_eq!(rewrite_batch(body.as_bytes(), &ALL, &known), None);
    }

    #[test]
    fn response_rewriting_touches_only_id_keys() {
        let body = format!(
            r#"{{"value":[{{"id":"{REST_MSG}","parentFolderId":"{REST_FOLDER}","internetMessageId":"<a@b>","singleValueExtendedProperties":[{{"value":"{ENTRYID}"}}]}},{{"hitId":"{EWS_MSG_SEARCH}","conversationId":"{CONV}","id":"{IMM}"}}]}}"#
        );
        assert_eq!(
            lookups(&candidates_in_response(body.as_bytes(), &ALL).expect("json")),
            [REST_MSG, exchange_id::ews_to_rest(EWS_MSG_SEARCH).as_str()]
        );
        let expected = body
            .replace(
                &format!(r#""id":"{REST_MSG}""#),
                &format!(r#""id":"{IMM}""#),
            )
            .replace(EWS_MSG_SEARCH, IMM_FOR_SEARCH);
        assert_eq!(
            rewrite_response(body.as_bytes(), &ALL, &known),
            Ok(Some((expected.into_bytes(), 2)))
        );
    }

    #[test]
    fn nothing_to_do_returns_none() {
        assert_eq!(
            rewrite_target("/v1.0/me/messages?$top=10", &ALL, &known),
            None
        );
        let target = format!("/v1.0/me/messages/{REST_MSG}");
        assert_eq!(rewrite_target(&target, &ALL, &nothing), None);
        assert_eq!(rewrite_target(&target, &[], &known), None);
        assert_eq!(candidates_in_target(&target, &[]), vec![]);
        let same = |lookup: &str| Some(lookup.to_owned());
        assert_eq!(rewrite_target(&target, &ALL, &same), None);
        assert_eq!(
            rewrite_json(br#"{"a":[1,true,null]}"#, &ALL, &known),
            Ok(None)
        );
        assert_eq!(
            rewrite_response(format!(r#"{{"id":"{IMM}"}}"#).as_bytes(), &ALL, &known),
            Ok(None)
        );
    }

    #[test]
    fn map_answers_that_are_not_id_shaped_are_ignored() {
        let target = format!("/v1.0/me/messages?$filter=id eq '{REST_MSG}'");
        for bad in ["", "x' or id ne 'y", "a b", "a%2Fb", "é"] {
            let answer = |_: &str| Some(bad.to_owned());
            assert_eq!(rewrite_target(&target, &ALL, &answer), None, "{bad:?}");
        }
        let huge = |_: &str| Some("A".repeat(701));
        assert_eq!(rewrite_target(&target, &ALL, &huge), None);
    }

    #[test]
    fn not_found_evicts_only_path_replacements_of_that_request() {
        let target = format!("/v1.0/me/messages/{REST_MSG}?$filter=id eq '{ENTRYID}'");
        let rewritten = apply_to_target(&target, &ALL, &known).expect("rewritten");
        let evict: Vec<&str> = not_found_evictions(&rewritten.applied, None)
            .iter()
            .map(|r| r.lookup.as_str())
            .collect();
        assert_eq!(evict, [REST_MSG]);
        assert!(not_found_evictions(&rewritten.applied, Some("1")).is_empty());
    }

    #[test]
    fn malformed_escapes_and_fragments_do_not_confuse_offsets() {
        let target = format!("/v1.0/me/messages/{REST_MSG}?a=%zz&$filter=id+eq+'{REST_MSG}'#frag");
        assert_eq!(
            rewrite_target(&target, &ALL, &known),
            Some((
                format!("/v1.0/me/messages/{IMM}?a=%zz&$filter=id+eq+'{IMM}'#frag"),
                2
            ))
        );
    }

    /// A JSON string value (no escapes needed) drawn from samples and noise.
    fn json_string_value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                REST_MSG,
                REST_FOLDER,
                REST_RLE_MSG,
                REST_ATT,
                REST_OCC,
                CONV,
                IMM,
                ENTRYID,
                IMMENTRYID,
                HEXEID,
                GUID,
                CHANGEKEY,
                UPN,
            ])
            .prop_map(str::to_owned),
            "[A-Za-z0-9 _=+/-]{0,120}",
        ]
    }

    fn json_body() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["id", "hitId", "value", "x"]),
                json_string_value(),
                prop::sample::select(vec!["", " ", "\n  "]),
            ),
            0..8,
        )
        .prop_map(|members| {
            let inner: Vec<String> = members
                .iter()
                .map(|(key, value, space)| format!("{space}\"{key}\":{space}\"{value}\""))
                .collect();
            format!("{{\"value\":[{{{}}}], \"n\": 1.0E+2}}", inner.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn lookup_index_deduplicates_like_a_set_of_copies(order in prop::collection::vec(0usize..4, 0..40)) {
            let samples = sample_candidates();
            let offered: Vec<Candidate> = order.iter().map(|&i| samples[i].clone()).collect();
            let mut index = LookupIndex::default();
            let mut list = Vec::new();
            let positions: Vec<usize> = offered
                .iter()
                .map(|c| index.position_or_push(&mut list, c.clone()))
                .collect();
            prop_assert_eq!((list, positions), dedupe_reference(&offered));
        }

        #[test]
        fn identity_map_never_changes_a_body(body in json_body()) {
            let same = |lookup: &str| Some(lookup.to_owned());
            prop_assert_eq!(rewrite_json(body.as_bytes(), &ALL, &same), Ok(None));
            prop_assert_eq!(rewrite_response(body.as_bytes(), &ALL, &same), Ok(None));
            let batch = format!("{{\"requests\":[{{\"id\":\"1\",\"url\":\"/me/messages/{REST_MSG}\",\"body\":{body}}}]}}");
            prop_assert_eq!(rewrite_batch(batch.as_bytes(), &ALL, &same), None);
        }

        #[test]
        fn rewritten_body_differs_only_where_items_were(body in json_body()) {
            let rewritten = rewrite_json(body.as_bytes(), &ALL, &known).expect("valid JSON");
            let expected = body.replace(REST_MSG, IMM).replace(REST_RLE_MSG, IMM_FOR_RLE).replace(ENTRYID, IMM_FOR_ENTRY);
            match rewritten {
                Some((bytes, count)) => {
                    prop_assert!(count > 0);
                    prop_assert_eq!(String::from_utf8(bytes).expect("utf-8"), expected);
                }
                None => prop_assert_eq!(body, expected),
            }
        }

        #[test]
        fn one_pass_rewrite_equals_rewriting_each_string_in_place(body in json_body()) {
            for response in [false, true] {
                let reference = json_scan::rewrite_strings(body.as_bytes(), |context, text| {
                    if response && !is_response_id_key(context.key) {
                        return None;
                    }
                    let new = known(&candidate_for(text, &ALL)?.lookup)?;
                    (new != text && is_id_shaped(&new)).then_some(new)
                })
                .expect("valid JSON");
                let scan = if response { scan_response(body.as_bytes(), &ALL) } else { scan_json(body.as_bytes(), &ALL) };
                let scan = scan.expect("valid JSON");
                assert_counted_agrees(&scan, body.as_bytes(), &known_map());
                let scanned = scan.apply(body.as_bytes(), &known);
                prop_assert_eq!(scanned.map(|r| r.output), reference);
            }
        }

        #[test]
        fn random_strings_never_produce_candidates(text in "\\PC{0,300}", noise in "[A-Za-z0-9_=+/%'() -]{0,300}") {
            for s in [&text, &noise] {
                let target = format!("/v1.0/me/messages/{s}?$filter=id eq '{s}'");
                prop_assert_eq!(candidates_in_target(&target, &ALL), vec![]);
                prop_assert_eq!(candidates_in_target(s, &ALL), vec![]);
                prop_assert_eq!(rewrite_target(s, &ALL, &|_: &str| Some(IMM.to_owned())), None);
                let body = serde_json::to_vec(&serde_json::json!({"id": s, "a": [s]})).expect("serialisable");
                prop_assert_eq!(candidates_in_json(&body, &ALL), Ok(vec![]));
            }
        }

        #[test]
        fn targets_never_panic_and_keep_bytes_outside_sites(target in "[/&=a-z$%'()A-Z0-9+ _-]{0,200}") {
            let marked = format!("{target}/{REST_MSG}");
            prop_assert_eq!(
                rewrite_target(&marked, &ALL, &known),
                Some((format!("{target}/{IMM}"), 1))
            );
        }
    }
}
