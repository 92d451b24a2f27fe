//! The simulated mailboxes: folders and items with the counters their IDs are built from,
//! the seed data, and the operations that change IDs (move) or do not (patch).
//!
//! Pure data behind one lock held by the caller; no I/O, no awaits, no HTTP. IDs are
//! computed from counters on demand, so a move changes the regular ID by construction and
//! can never touch the immutable one.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::ids::{self, ExchangeId, MailboxKeys};
use super::SEED_USERS;

/// Which kind of ID every `id` of an answer carries (`Prefer: IdType="ImmutableId"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMode {
    Regular,
    Immutable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKind {
    Root,
    Mail,
    Calendar,
    Contacts,
}

#[derive(Clone, Debug)]
pub struct Folder {
    pub well_known: &'static str,
    pub display_name: &'static str,
    pub counter: u64,
    pub kind: FolderKind,
}

/// Events and contacts are MAPI messages too; only the route tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    Message,
    Event,
    Contact,
}

#[derive(Clone, Debug)]
pub struct Attachment {
    pub key: [u8; 16],
    pub name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Item {
    pub kind: ItemKind,
    /// Counter of the folder the item is in now; part of its regular ID.
    pub folder: u64,
    /// The item's own counter in its regular ID; a move assigns a new one.
    pub counter: u64,
    /// Counter of its immutable ID; assigned once at creation.
    pub immutable: u64,
    pub conversation: [u8; 16],
    pub created: i64,
    pub modified: i64,
    /// The Graph properties a client may read and set (subject, body, from, ...).
    pub fields: Map<String, Value>,
    pub attachments: Vec<Attachment>,
    /// Position in the mailbox's change sequence, for delta.
    pub change_seq: u64,
}

/// An item that left a folder, so delta can report it as `@removed`.
#[derive(Clone, Debug)]
pub struct Tombstone {
    pub seq: u64,
    pub folder: u64,
    pub kind: ItemKind,
    pub deleted: bool,
    pub regular_id: String,
    pub immutable_id: String,
}

/// Why an ID in a path did not name an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Malformed,
    /// Decodes, but names another mailbox.
    Foreign,
    /// Decodes and names this mailbox, but no such item (moved, deleted, never existed).
    NotFound,
}

#[derive(Clone, Debug)]
pub struct Mailbox {
    pub tenant_id: String,
    pub user_id: String,
    pub upn: String,
    pub display_name: String,
    pub keys: MailboxKeys,
    pub folders: Vec<Folder>,
    items: BTreeMap<u64, Item>,
    by_counter: HashMap<u64, u64>,
    next_counter: u64,
    next_immutable: u64,
    seq: u64,
    pub tombstones: Vec<Tombstone>,
}

/// Seed dates start here (2024-05-01T08:00:00Z) and advance one hour per item.
const SEED_EPOCH: i64 = 1_714_550_400;
const FIRST_ITEM_COUNTER: u64 = 0x4cdc_9600;
const FIRST_IMMUTABLE_COUNTER: u64 = 0x03c6_4000;

const FOLDERS: [(&str, &str, u64, FolderKind); 8] = [
    (
        "msgfolderroot",
        "Top of Information Store",
        0x0108,
        FolderKind::Root,
    ),
    ("inbox", "Inbox", 0x010c, FolderKind::Mail),
    ("drafts", "Drafts", 0x010f, FolderKind::Mail),
    ("sentitems", "Sent Items", 0x0109, FolderKind::Mail),
    ("archive", "Archive", 0x0138, FolderKind::Mail),
    ("deleteditems", "Deleted Items", 0x010a, FolderKind::Mail),
    ("calendar", "Calendar", 0x010d, FolderKind::Calendar),
    ("contacts", "Contacts", 0x010e, FolderKind::Contacts),
];

const SUBJECTS: [&str; 5] = [
    "Quarterly report",
    "Team lunch",
    "Project Falcon update",
    "Expense approval",
    "Customer feedback",
];

const SENDERS: [(&str, &str); 3] = [
    ("Megan Bowen", "meganb@contoso.onmicrosoft.com"),
    ("Lee Gu", "leeg@contoso.onmicrosoft.com"),
    ("Nestor Wilke", "nestorw@contoso.onmicrosoft.com"),
];

/// FNV-1a, so every seeded GUID is a pure function of the user and a label.
fn derive_guid(user_id: &str, label: &str) -> [u8; 16] {
    let hash = |salt: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for byte in user_id.bytes().chain(label.bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hash(1).to_be_bytes());
    out[8..].copy_from_slice(&hash(2).to_be_bytes());
    // Version 4 / RFC 4122 variant bits, so the moniker reads as an ordinary GUID.
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

fn display_name_of(upn: &str) -> String {
    match upn.split('@').next().unwrap_or(upn) {
        "adelev" => "Adele Vance".into(),
        "alexw" => "Alex Wilber".into(),
        "meganb" => "Megan Bowen".into(),
        other => other.into(),
    }
}

impl Mailbox {
    fn empty(tenant_id: &str, user_id: &str, upn: &str) -> Mailbox {
        Mailbox {
            tenant_id: tenant_id.into(),
            user_id: user_id.into(),
            upn: upn.into(),
            display_name: display_name_of(upn),
            keys: MailboxKeys {
                mailbox_guid: derive_guid(user_id, "mailbox"),
                store_uid: derive_guid(user_id, "store"),
                db_guid: derive_guid(user_id, "database"),
            },
            folders: FOLDERS
                .iter()
                .map(|&(well_known, display_name, counter, kind)| Folder {
                    well_known,
                    display_name,
                    counter,
                    kind,
                })
                .collect(),
            items: BTreeMap::new(),
            by_counter: HashMap::new(),
            next_counter: FIRST_ITEM_COUNTER,
            next_immutable: FIRST_IMMUTABLE_COUNTER,
            seq: 0,
            tombstones: Vec::new(),
        }
    }

    /// 25 inbox messages (every fourth with an attachment), 2 drafts, 3 events, 3 contacts.
    fn seeded(tenant_id: &str, user_id: &str, upn: &str) -> Mailbox {
        let mut mailbox = Mailbox::empty(tenant_id, user_id, upn);
        let mut hour = 0;
        let mut at = || {
            hour += 1;
            SEED_EPOCH + hour * 3600
        };
        for n in 1..=25u32 {
            let (name, address) = SENDERS[n as usize % SENDERS.len()];
            let subject = format!("{} #{n}", SUBJECTS[n as usize % SUBJECTS.len()]);
            let content = format!(
                "Hello {}, this is seeded message {n}.",
                mailbox.display_name
            );
            let time = at();
            let fields = message_fields(&subject, &content, name, address, n % 3 == 0, false, time);
            let attachments = if n % 4 == 0 {
                vec![Attachment {
                    key: derive_guid(user_id, &format!("attachment-{n}")),
                    name: format!("report-{n}.txt"),
                    content_type: "text/plain".into(),
                    content: format!("Attachment {n} of {upn}\n").into_bytes(),
                }]
            } else {
                Vec::new()
            };
            mailbox.insert(ItemKind::Message, 0x010c, time, fields, attachments);
        }
        for n in 1..=2u32 {
            let time = at();
            let fields = message_fields(
                &format!("Draft: plan {n}"),
                "Unfinished thoughts.",
                &mailbox.display_name.clone(),
                upn,
                true,
                true,
                time,
            );
            mailbox.insert(ItemKind::Message, 0x010f, time, fields, Vec::new());
        }
        for (n, subject) in ["Weekly sync", "Design review", "One on one"]
            .iter()
            .enumerate()
        {
            let time = at();
            let start = SEED_EPOCH + 5 * 86_400 + n as i64 * 86_400 + 3600;
            let date =
                |t: i64| super::reply::rfc3339(t).trim_end_matches('Z').to_string() + ".0000000";
            let fields = json!({
                "subject": subject,
                "bodyPreview": format!("{subject} agenda"),
                "isAllDay": false,
                "start": {"dateTime": date(start), "timeZone": "UTC"},
                "end": {"dateTime": date(start + 1800), "timeZone": "UTC"},
                "location": {"displayName": "Conference Room 1"},
                "organizer": {"emailAddress": {"name": mailbox.display_name, "address": upn}},
            });
            mailbox.insert(ItemKind::Event, 0x010d, time, object(fields), Vec::new());
        }
        for (given, surname) in [
            ("Pradeep", "Gupta"),
            ("Lynne", "Robbins"),
            ("Johanna", "Lorenz"),
        ] {
            let time = at();
            let address = format!("{}@contoso.onmicrosoft.com", given.to_lowercase());
            let fields = json!({
                "displayName": format!("{given} {surname}"),
                "givenName": given,
                "surname": surname,
                "emailAddresses": [{"name": format!("{given} {surname}"), "address": address}],
            });
            mailbox.insert(ItemKind::Contact, 0x010e, time, object(fields), Vec::new());
        }
        mailbox
    }

    fn allocate_counter(&mut self) -> u64 {
        self.next_counter += 1;
        self.next_counter
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds an item and returns its immutable counter.
    pub fn insert(
        &mut self,
        kind: ItemKind,
        folder: u64,
        time: i64,
        fields: Map<String, Value>,
        attachments: Vec<Attachment>,
    ) -> u64 {
        let counter = self.allocate_counter();
        self.next_immutable += 1;
        let immutable = self.next_immutable;
        let change_seq = self.next_seq();
        let conversation = derive_guid(&self.user_id, &format!("conversation-{immutable}"));
        self.by_counter.insert(counter, immutable);
        self.items.insert(
            immutable,
            Item {
                kind,
                folder,
                counter,
                immutable,
                conversation,
                created: time,
                modified: time,
                fields,
                attachments,
                change_seq,
            },
        );
        immutable
    }

    pub fn item(&self, immutable: u64) -> Option<&Item> {
        self.items.get(&immutable)
    }

    pub fn folder_by_counter(&self, counter: u64) -> Option<&Folder> {
        self.folders.iter().find(|folder| folder.counter == counter)
    }

    /// A well-known name (case-insensitive) or this mailbox's folder ID.
    pub fn resolve_folder(&self, reference: &str) -> Result<&Folder, Lookup> {
        if let Some(folder) = self
            .folders
            .iter()
            .find(|folder| folder.well_known.eq_ignore_ascii_case(reference))
        {
            return Ok(folder);
        }
        let bytes = ids::from_rest(reference).ok_or(Lookup::Malformed)?;
        match ids::parse_id_bytes(&bytes) {
            Some(ExchangeId::Folder {
                mailbox_guid,
                store_uid,
                folder,
            }) => {
                if mailbox_guid != self.keys.mailbox_guid || store_uid != self.keys.store_uid {
                    return Err(Lookup::Foreign);
                }
                self.folder_by_counter(folder.counter)
                    .ok_or(Lookup::NotFound)
            }
            _ => Err(Lookup::Malformed),
        }
    }

    /// The item a decoded ID names now, by its regular or its immutable identity.
    pub fn find_decoded(&self, id: &ExchangeId) -> Result<&Item, Lookup> {
        match id {
            ExchangeId::Item(regular) | ExchangeId::Attachment(regular, _) => {
                if regular.mailbox_guid != self.keys.mailbox_guid
                    || regular.store_uid != self.keys.store_uid
                    || regular.item.db_guid != self.keys.db_guid
                {
                    return Err(Lookup::Foreign);
                }
                self.by_counter
                    .get(&regular.item.counter)
                    .and_then(|immutable| self.items.get(immutable))
                    .filter(|item| item.folder == regular.folder.counter)
                    .ok_or(Lookup::NotFound)
            }
            ExchangeId::ImmutableItem(global) | ExchangeId::ImmutableAttachment(global, _) => {
                if global.db_guid != self.keys.db_guid {
                    return Err(Lookup::Foreign);
                }
                self.items.get(&global.counter).ok_or(Lookup::NotFound)
            }
            ExchangeId::Folder { .. } | ExchangeId::Conversation { .. } => Err(Lookup::Malformed),
        }
    }

    /// An item ID from a URL path: a restId or a restImmutableEntryId.
    pub fn find_item(&self, id: &str, kind: ItemKind) -> Result<&Item, Lookup> {
        let bytes = ids::from_rest(id).ok_or(Lookup::Malformed)?;
        let decoded = ids::parse_id_bytes(&bytes).ok_or(Lookup::Malformed)?;
        if !matches!(decoded, ExchangeId::Item(_) | ExchangeId::ImmutableItem(_)) {
            return Err(Lookup::Malformed);
        }
        self.find_decoded(&decoded).and_then(|item| {
            if item.kind == kind {
                Ok(item)
            } else {
                Err(Lookup::NotFound)
            }
        })
    }

    pub fn regular_id_bytes(&self, item: &Item) -> Vec<u8> {
        ids::regular_item_id(&self.keys, item.folder, item.counter)
    }

    pub fn immutable_id_bytes(&self, item: &Item) -> Vec<u8> {
        ids::immutable_item_id(&self.keys, item.immutable)
    }

    pub fn item_id(&self, item: &Item, mode: IdMode) -> String {
        match mode {
            IdMode::Regular => ids::to_rest(&self.regular_id_bytes(item)),
            IdMode::Immutable => ids::to_rest(&self.immutable_id_bytes(item)),
        }
    }

    pub fn attachment_id(&self, item: &Item, key: &[u8; 16], mode: IdMode) -> String {
        let parent = match mode {
            IdMode::Regular => self.regular_id_bytes(item),
            IdMode::Immutable => self.immutable_id_bytes(item),
        };
        ids::to_rest(&ids::attachment_id(&parent, key))
    }

    pub fn folder_id(&self, counter: u64) -> String {
        ids::to_rest(&ids::regular_folder_id(&self.keys, counter))
    }

    /// Items of one kind, newest first, optionally only those in one folder.
    pub fn list(&self, kind: ItemKind, folder: Option<u64>) -> Vec<&Item> {
        let mut items: Vec<&Item> = self
            .items
            .values()
            .filter(|item| item.kind == kind && folder.is_none_or(|f| item.folder == f))
            .collect();
        items.sort_by_key(|item| std::cmp::Reverse((item.created, item.immutable)));
        items
    }

    /// Moves an item: new regular identity, same immutable one, a tombstone in the source.
    pub fn move_item(&mut self, immutable: u64, destination: u64) -> Option<()> {
        let (kind, old_folder, old_counter) = {
            let item = self.items.get(&immutable)?;
            (item.kind, item.folder, item.counter)
        };
        let regular_id = ids::to_rest(&ids::regular_item_id(&self.keys, old_folder, old_counter));
        let immutable_id = ids::to_rest(&ids::immutable_item_id(&self.keys, immutable));
        let seq = self.next_seq();
        self.tombstones.push(Tombstone {
            seq,
            folder: old_folder,
            kind,
            deleted: false,
            regular_id,
            immutable_id,
        });
        let counter = self.allocate_counter();
        let change_seq = self.next_seq();
        self.by_counter.remove(&old_counter);
        self.by_counter.insert(counter, immutable);
        let item = self.items.get_mut(&immutable)?;
        item.folder = destination;
        item.counter = counter;
        item.change_seq = change_seq;
        Some(())
    }

    /// Merges client-settable properties; IDs and other computed ones are ignored.
    pub fn patch_item(
        &mut self,
        immutable: u64,
        changes: &Map<String, Value>,
        now: i64,
    ) -> Option<()> {
        let change_seq = self.next_seq();
        let item = self.items.get_mut(&immutable)?;
        for (name, value) in changes {
            if !COMPUTED_PROPERTIES.contains(&name.as_str()) && !name.starts_with('@') {
                item.fields.insert(name.clone(), value.clone());
            }
        }
        item.modified = now;
        item.change_seq = change_seq;
        Some(())
    }

    pub fn delete_item(&mut self, immutable: u64) -> Option<()> {
        let item = self.items.remove(&immutable)?;
        self.by_counter.remove(&item.counter);
        let regular_id = ids::to_rest(&self.regular_id_bytes(&item));
        let immutable_id = ids::to_rest(&self.immutable_id_bytes(&item));
        let seq = self.next_seq();
        self.tombstones.push(Tombstone {
            seq,
            folder: item.folder,
            kind: item.kind,
            deleted: true,
            regular_id,
            immutable_id,
        });
        Some(())
    }

    pub fn current_seq(&self) -> u64 {
        self.seq
    }
}

/// Properties the simulator computes; a PATCH or create cannot set them.
pub const COMPUTED_PROPERTIES: [&str; 11] = [
    "id",
    "parentFolderId",
    "conversationId",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "webLink",
    "hasAttachments",
    "attachments",
    "iCalUId",
    "isDraft",
];

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn message_fields(
    subject: &str,
    content: &str,
    from_name: &str,
    from_address: &str,
    is_read: bool,
    is_draft: bool,
    time: i64,
) -> Map<String, Value> {
    let date = super::reply::rfc3339(time);
    object(json!({
        "receivedDateTime": date,
        "sentDateTime": date,
        "subject": subject,
        "bodyPreview": content,
        "importance": "normal",
        "isRead": is_read,
        "isDraft": is_draft,
        "body": {"contentType": "text", "content": content},
        "from": {"emailAddress": {"name": from_name, "address": from_address}},
        "toRecipients": [],
    }))
}

/// Every tenant's mailboxes, in `SEED_USERS` order.
#[derive(Clone, Debug)]
pub struct Store {
    pub mailboxes: Vec<Mailbox>,
}

impl Store {
    pub fn seeded() -> Store {
        Store {
            mailboxes: SEED_USERS
                .iter()
                .map(|user| Mailbox::seeded(user.tenant_id, user.user_id, user.upn))
                .collect(),
        }
    }

    /// A user of `tenant_id` by object ID or UPN (UPNs compare case-insensitively).
    pub fn find_user(&self, tenant_id: &str, reference: &str) -> Option<usize> {
        self.mailboxes.iter().position(|mailbox| {
            mailbox.tenant_id.eq_ignore_ascii_case(tenant_id)
                && (mailbox.user_id.eq_ignore_ascii_case(reference)
                    || mailbox.upn.eq_ignore_ascii_case(reference))
        })
    }

    pub fn find_by_upn(&self, upn: &str) -> Option<&Mailbox> {
        self.mailboxes
            .iter()
            .find(|mailbox| mailbox.upn.eq_ignore_ascii_case(upn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adele() -> Mailbox {
        Store::seeded().mailboxes.remove(0)
    }

    #[test]
    fn seed_has_the_documented_contents() {
        let mailbox = adele();
        assert_eq!(mailbox.list(ItemKind::Message, Some(0x010c)).len(), 25);
        assert_eq!(mailbox.list(ItemKind::Message, Some(0x010f)).len(), 2);
        assert_eq!(mailbox.list(ItemKind::Event, None).len(), 3);
        assert_eq!(mailbox.list(ItemKind::Contact, None).len(), 3);
        let with_attachment = mailbox
            .list(ItemKind::Message, Some(0x010c))
            .iter()
            .filter(|item| !item.attachments.is_empty())
            .count();
        assert_eq!(with_attachment, 6);
    }

    #[test]
    fn seed_is_deterministic() {
        let (a, b) = (adele(), adele());
        let first = |m: &Mailbox| m.item_id(m.list(ItemKind::Message, None)[0], IdMode::Regular);
        assert_eq!(first(&a), first(&b));
        assert_ne!(a.keys, Store::seeded().mailboxes[1].keys);
    }

    #[test]
    fn regular_and_immutable_ids_have_the_real_lengths() {
        let mailbox = adele();
        let item = mailbox.list(ItemKind::Message, None)[0];
        let regular = mailbox.item_id(item, IdMode::Regular);
        let immutable = mailbox.item_id(item, IdMode::Immutable);
        assert_eq!(regular.len(), 152);
        assert!(regular.ends_with('=') && regular.starts_with("AAMkA"));
        assert_eq!(immutable.len(), 68);
        assert!(immutable.starts_with(ids::IMMUTABLE_REST_PREFIX));
        assert_eq!(mailbox.folder_id(0x010c).len(), 120);
    }

    #[test]
    fn move_changes_the_regular_id_and_keeps_the_immutable_one() {
        let mut mailbox = adele();
        let item = mailbox.list(ItemKind::Message, Some(0x010c))[0].clone();
        let old_regular = mailbox.item_id(&item, IdMode::Regular);
        let immutable = mailbox.item_id(&item, IdMode::Immutable);
        mailbox.move_item(item.immutable, 0x0138).unwrap();
        let moved = mailbox.item(item.immutable).unwrap().clone();
        let new_regular = mailbox.item_id(&moved, IdMode::Regular);
        assert_ne!(new_regular, old_regular);
        assert_eq!(mailbox.item_id(&moved, IdMode::Immutable), immutable);
        assert_eq!(
            mailbox.find_item(&old_regular, ItemKind::Message).err(),
            Some(Lookup::NotFound)
        );
        assert_eq!(
            mailbox
                .find_item(&new_regular, ItemKind::Message)
                .unwrap()
                .immutable,
            item.immutable
        );
        assert_eq!(
            mailbox
                .find_item(&immutable, ItemKind::Message)
                .unwrap()
                .folder,
            0x0138
        );
        assert_eq!(mailbox.tombstones.len(), 1);
        assert_eq!(mailbox.tombstones[0].regular_id, old_regular);
    }

    #[test]
    fn ids_of_another_mailbox_are_foreign_and_junk_is_malformed() {
        let store = Store::seeded();
        let alex = &store.mailboxes[1];
        let foreign = alex.item_id(alex.list(ItemKind::Message, None)[0], IdMode::Regular);
        let foreign_immutable =
            alex.item_id(alex.list(ItemKind::Message, None)[0], IdMode::Immutable);
        let adele = &store.mailboxes[0];
        assert_eq!(
            adele.find_item(&foreign, ItemKind::Message).err(),
            Some(Lookup::Foreign)
        );
        assert_eq!(
            adele.find_item(&foreign_immutable, ItemKind::Message).err(),
            Some(Lookup::Foreign)
        );
        assert_eq!(
            adele.find_item("AAMk!!", ItemKind::Message).err(),
            Some(Lookup::Malformed)
        );
        assert_eq!(
            adele
                .find_item(&adele.folder_id(0x010c), ItemKind::Message)
                .err(),
            Some(Lookup::Malformed)
        );
    }

    #[test]
    fn an_event_id_is_not_found_on_the_messages_route() {
        let mailbox = adele();
        let event = mailbox.item_id(mailbox.list(ItemKind::Event, None)[0], IdMode::Regular);
        assert_eq!(
            mailbox.find_item(&event, ItemKind::Message).err(),
            Some(Lookup::NotFound)
        );
    }

    #[test]
    fn folders_resolve_by_well_known_name_or_id() {
        let mailbox = adele();
        assert_eq!(mailbox.resolve_folder("Inbox").unwrap().counter, 0x010c);
        let id = mailbox.folder_id(0x0138);
        assert_eq!(mailbox.resolve_folder(&id).unwrap().well_known, "archive");
        assert_eq!(
            mailbox.resolve_folder("nope").err(),
            Some(Lookup::Malformed)
        );
    }

    #[test]
    fn patch_keeps_ids_and_ignores_computed_properties() {
        let mut mailbox = adele();
        let item = mailbox.list(ItemKind::Message, None)[0].clone();
        let changes = object(json!({"subject": "new", "id": "x", "parentFolderId": "y"}));
        mailbox.patch_item(item.immutable, &changes, 5).unwrap();
        let after = mailbox.item(item.immutable).unwrap();
        assert_eq!(after.fields["subject"], "new");
        assert_eq!(after.counter, item.counter);
        assert!(!after.fields.contains_key("id"));
    }
}
