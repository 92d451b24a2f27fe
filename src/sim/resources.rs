//! Graph's JSON shapes for the simulated resources: message, event, contact, mailFolder,
//! fileAttachment and user.
//!
//! Rendering only: the ID kind of every `id` is decided by the caller (from `Prefer`), and
//! folder and conversation IDs stay regular whatever it says, as in Graph.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use super::ids;
use super::reply::rfc3339;
use super::store::{Attachment, Folder, FolderKind, IdMode, Item, ItemKind, Mailbox};

pub const GRAPH_ORIGIN: &str = "https://graph.microsoft.com";

/// A change key (type 9, 22 bytes of PR_CHANGE_KEY): never an ID, so the proxy must leave it.
fn change_key(mailbox: &Mailbox, item: &Item) -> String {
    let mut bytes = vec![0x09, 0, 0, 0, 0x16, 0, 0, 0];
    bytes.extend_from_slice(&mailbox.keys.db_guid);
    bytes.extend_from_slice(&item.change_seq.to_be_bytes()[2..]);
    STANDARD.encode(bytes)
}

pub fn item_json(mailbox: &Mailbox, item: &Item, mode: IdMode) -> Value {
    let key = change_key(mailbox, item);
    let mut out = Map::new();
    out.insert("@odata.etag".into(), format!("W/\"{key}\"").into());
    out.insert("id".into(), mailbox.item_id(item, mode).into());
    out.insert("createdDateTime".into(), rfc3339(item.created).into());
    out.insert("lastModifiedDateTime".into(), rfc3339(item.modified).into());
    out.insert("changeKey".into(), key.into());
    let ews = ids::to_ews(&mailbox.regular_id_bytes(item));
    let encoded = utf8_percent_encode(&ews, NON_ALPHANUMERIC);
    match item.kind {
        ItemKind::Message => {
            out.insert(
                "hasAttachments".into(),
                (!item.attachments.is_empty()).into(),
            );
            out.insert(
                "parentFolderId".into(),
                mailbox.folder_id(item.folder).into(),
            );
            out.insert(
                "conversationId".into(),
                ids::to_rest(&ids::conversation_id(&mailbox.keys, &item.conversation)).into(),
            );
            out.insert(
                "webLink".into(),
                format!("https://outlook.office365.com/owa/?ItemID={encoded}&exvsurl=1&viewmodel=ReadMessageItem").into(),
            );
        }
        ItemKind::Event => {
            out.insert(
                "iCalUId".into(),
                format!(
                    "040000008200E00074C5B7101A82E008{}",
                    hex(&item.conversation)
                )
                .into(),
            );
            out.insert(
                "webLink".into(),
                format!("https://outlook.office365.com/owa/?itemid={encoded}&exvsurl=1&path=/calendar/item").into(),
            );
        }
        ItemKind::Contact => {
            out.insert(
                "parentFolderId".into(),
                mailbox.folder_id(item.folder).into(),
            );
        }
    }
    for (name, value) in &item.fields {
        out.entry(name.clone()).or_insert_with(|| value.clone());
    }
    Value::Object(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

pub fn folder_json(mailbox: &Mailbox, folder: &Folder) -> Value {
    let kind = match folder.kind {
        FolderKind::Calendar => ItemKind::Event,
        FolderKind::Contacts => ItemKind::Contact,
        FolderKind::Root | FolderKind::Mail => ItemKind::Message,
    };
    let items = mailbox.list(kind, Some(folder.counter));
    let unread = items
        .iter()
        .filter(|item| item.fields.get("isRead") == Some(&Value::Bool(false)))
        .count();
    json!({
        "id": mailbox.folder_id(folder.counter),
        "displayName": folder.display_name,
        "parentFolderId": mailbox.folder_id(0x0108),
        "childFolderCount": 0,
        "unreadItemCount": unread,
        "totalItemCount": items.len(),
        "isHidden": false,
    })
}

pub fn attachment_json(
    mailbox: &Mailbox,
    item: &Item,
    attachment: &Attachment,
    mode: IdMode,
) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": mailbox.attachment_id(item, &attachment.key, mode),
        "lastModifiedDateTime": rfc3339(item.modified),
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.content.len(),
        "isInline": false,
        "contentBytes": STANDARD.encode(&attachment.content),
    })
}

pub fn user_json(mailbox: &Mailbox) -> Value {
    json!({
        "id": mailbox.user_id,
        "displayName": mailbox.display_name,
        "userPrincipalName": mailbox.upn,
        "mail": mailbox.upn,
    })
}

/// `$select`: keeps the named properties plus `id` and annotations, as Graph does.
pub fn select(value: Value, selected: &[String]) -> Value {
    if selected.is_empty() {
        return value;
    }
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(name, _)| {
                    name == "id"
                        || name.starts_with('@')
                        || selected.iter().any(|s| s.eq_ignore_ascii_case(name))
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::store::Store;

    #[test]
    fn message_json_has_graphs_properties_and_an_ews_weblink() {
        let store = Store::seeded();
        let mailbox = &store.mailboxes[0];
        let item = mailbox.list(ItemKind::Message, Some(0x010c))[0];
        let json = item_json(mailbox, item, IdMode::Immutable);
        assert_eq!(json["id"], mailbox.item_id(item, IdMode::Immutable));
        assert_eq!(json["parentFolderId"], mailbox.folder_id(0x010c));
        assert!(json["conversationId"]
            .as_str()
            .unwrap()
            .starts_with("AAQkA"));
        assert_eq!(json["subject"], "Quarterly report #25");
        let ews = ids::to_ews(&mailbox.regular_id_bytes(item));
        let link = json["webLink"].as_str().unwrap();
        assert!(link.contains(
            &ews.replace('/', "%2F")
                .replace('+', "%2B")
                .replace('=', "%3D")
        ));
        assert!(json["changeKey"]
            .as_str()
            .unwrap()
            .starts_with("CQAAABYAAA"));
    }

    #[test]
    fn select_keeps_id_and_named_properties() {
        let value = json!({"@odata.etag": "e", "id": "i", "subject": "s", "body": {}});
        assert_eq!(
            select(value, &["Subject".to_string()]),
            json!({"@odata.etag": "e", "id": "i", "subject": "s"})
        );
    }
}
