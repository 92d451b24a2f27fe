//! Delta queries on messages (`messages/delta`, `mailFolders/{f}/messages/delta`): the first
//! round returns every message, then `@odata.nextLink` pages carry `$skiptoken` and the last
//! page an `@odata.deltaLink` with `$deltatoken`; later rounds return only what changed,
//! with `@removed` entries for items that left the folder.
//!
//! Tokens are opaque to clients but plain state here (no server-side sync state to expire).
//! Reads the store only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::reply::{GraphError, GraphReply};
use super::resources;
use super::routes::Context;
use super::store::{FolderKind, IdMode, ItemKind, Mailbox};

/// Delta state in a token: changes after `since`, up to `upto`, starting at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DeltaState {
    since: u64,
    upto: u64,
    offset: usize,
}

impl DeltaState {
    fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("d1.{}.{}.{}", self.since, self.upto, self.offset))
    }

    fn decode(token: &str) -> Option<DeltaState> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let mut parts = text.strip_prefix("d1.")?.split('.');
        let state = DeltaState {
            since: parts.next()?.parse().ok()?,
            upto: parts.next()?.parse().ok()?,
            offset: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(state)
    }
}

pub(super) fn delta(
    context: &Context<'_>,
    mailbox: &Mailbox,
    folder: Option<u64>,
) -> Result<GraphReply, GraphError> {
    let bad_token = || GraphError::bad_request("The delta or skip token is not valid.");
    let state = if let Some(token) = context.query.get("skiptoken") {
        DeltaState::decode(token).ok_or_else(bad_token)?
    } else if let Some(token) = context.query.get("deltatoken") {
        let previous = DeltaState::decode(token).ok_or_else(bad_token)?;
        DeltaState {
            since: previous.upto,
            upto: mailbox.current_seq(),
            offset: 0,
        }
    } else {
        DeltaState {
            since: 0,
            upto: mailbox.current_seq(),
            offset: 0,
        }
    };
    let window = |seq: u64| seq > state.since && seq <= state.upto;
    let mail_folder = |counter: u64| {
        mailbox
            .folder_by_counter(counter)
            .is_some_and(|f| f.kind == FolderKind::Mail)
    };
    let mut changes: Vec<(u64, Value)> = mailbox
        .list(ItemKind::Message, folder)
        .into_iter()
        .filter(|item| window(item.change_seq) && mail_folder(item.folder))
        .map(|item| {
            (
                item.change_seq,
                resources::item_json(mailbox, item, context.mode),
            )
        })
        .collect();
    for tombstone in &mailbox.tombstones {
        let in_scope = match folder {
            Some(counter) => tombstone.folder == counter,
            // Across all folders a move is no removal, except of the regular ID it retired.
            None => tombstone.deleted || context.mode == IdMode::Regular,
        };
        if tombstone.kind == ItemKind::Message && in_scope && window(tombstone.seq) {
            let id = match context.mode {
                IdMode::Regular => &tombstone.regular_id,
                IdMode::Immutable => &tombstone.immutable_id,
            };
            changes.push((
                tombstone.seq,
                json!({"@odata.type": "#microsoft.graph.message", "id": id, "@removed": {"reason": "deleted"}}),
            ));
        }
    }
    changes.sort_by_key(|(seq, _)| *seq);
    let size = context
        .preferences
        .max_page_size()
        .or_else(|| context.query.get("top").and_then(|top| top.parse().ok()))
        .unwrap_or(10)
        .clamp(1, 1000);
    let page: Vec<Value> = changes
        .iter()
        .skip(state.offset)
        .take(size)
        .map(|(_, value)| value.clone())
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        context.context_url(mailbox, "messages/$delta").into(),
    );
    body.insert("value".into(), Value::Array(page));
    let next = state.offset.saturating_add(size);
    if next < changes.len() {
        let token = DeltaState {
            offset: next,
            ..state
        }
        .encode();
        body.insert(
            "@odata.nextLink".into(),
            context.link(&format!("$skiptoken={token}")).into(),
        );
    } else {
        let token = DeltaState { offset: 0, ..state }.encode();
        body.insert(
            "@odata.deltaLink".into(),
            context.link(&format!("$deltatoken={token}")).into(),
        );
    }
    Ok(GraphReply::json(200, Value::Object(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_tokens_round_trip_and_junk_is_refused() {
        let state = DeltaState {
            since: 3,
            upto: 40,
            offset: 10,
        };
        assert_eq!(DeltaState::decode(&state.encode()), Some(state));
        assert_eq!(DeltaState::decode("junk"), None);
    }
}
