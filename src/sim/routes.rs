//! The simulated Graph API surface: path parsing (`v1.0`/`beta`, `me`/`users/{id|upn}`),
//! query options (`$top`, `$skip`, `$select`, `$search`, delta tokens) and one handler per
//! resource operation.
//!
//! Runs under the store lock and never awaits; admission (throttling, delays, injected
//! failures) happens before `dispatch` is called. The ID kind of every answer comes from
//! `Prefer: IdType`, except for `$search`, which ignores it as Graph does.

use std::time::Instant;

use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use super::delta::delta;
use super::prefer::Preferences;
use super::query::Query;
use super::reply::{GraphError, GraphReply};
use super::resources::{self, GRAPH_ORIGIN};
use super::store::{FolderKind, IdMode, ItemKind, Lookup, Mailbox, Store, COMPUTED_PROPERTIES};
use super::token::Claims;
use super::{ids, lock, translate, Simulator};

/// One Graph request as the handlers see it (an HTTP request or a `$batch` sub-request).
pub struct GraphRequest<'a> {
    pub method: &'a str,
    /// Raw path as received, e.g. `/v1.0/users/AdeleV%40contoso.onmicrosoft.com/messages`.
    pub path: &'a str,
    /// Raw query without `?`, possibly empty.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl GraphRequest<'_> {
    pub fn preferences(&self) -> Preferences {
        Preferences::parse(
            self.headers
                .get_all("prefer")
                .iter()
                .filter_map(|value| value.to_str().ok()),
        )
    }

    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.to_string()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Me,
    User(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Batch {
        version: String,
    },
    Mailbox {
        version: String,
        target: Target,
        rest: Vec<String>,
    },
}

/// Route words compared case-insensitively, as Graph does; IDs keep their case.
const ROUTE_WORDS: [&str; 10] = [
    "mailFolders",
    "messages",
    "delta",
    "move",
    "attachments",
    "events",
    "calendar",
    "contacts",
    "childFolders",
    "translateExchangeIds",
];

pub fn parse_route(path: &str) -> Result<Route, GraphError> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let decoded = percent_decode_str(segment).decode_utf8_lossy().into_owned();
            ROUTE_WORDS
                .iter()
                .find(|word| word.eq_ignore_ascii_case(&decoded))
                .map_or(decoded, |word| (*word).to_string())
        })
        .collect();
    let Some((version, rest)) = segments.split_first() else {
        return Err(not_found(path));
    };
    let version = match version.to_ascii_lowercase().as_str() {
        "v1.0" => "v1.0",
        "beta" => "beta",
        _ => return Err(not_found(path)),
    };
    match rest {
        [batch] if batch.eq_ignore_ascii_case("$batch") => Ok(Route::Batch {
            version: version.into(),
        }),
        [me, tail @ ..] if me.eq_ignore_ascii_case("me") => Ok(Route::Mailbox {
            version: version.into(),
            target: Target::Me,
            rest: tail.to_vec(),
        }),
        [users, user, tail @ ..] if users.eq_ignore_ascii_case("users") => Ok(Route::Mailbox {
            version: version.into(),
            target: Target::User(user.clone()),
            rest: tail.to_vec(),
        }),
        [first, ..] => Err(GraphError::unknown_segment(first)),
        [] => Err(not_found(path)),
    }
}

fn not_found(path: &str) -> GraphError {
    GraphError::new(404, "NotFound", format!("No route matches '{path}'."))
}

/// The mailbox a request is for: `/me` is the token's `oid`; users only within its tenant.
pub fn resolve_mailbox(
    store: &Store,
    claims: &Claims,
    target: &Target,
) -> Result<usize, GraphError> {
    let reference = match target {
        Target::Me if claims.app_only => {
            return Err(GraphError::bad_request(
                "/me request is only valid with delegated authentication flow.",
            ))
        }
        Target::Me => claims.object_id.as_str(),
        Target::User(user) => user.as_str(),
    };
    store
        .find_user(&claims.tenant_id, reference)
        .ok_or_else(|| {
            GraphError::new(
                404,
                "ErrorInvalidUser",
                format!("The requested user '{reference}' is invalid."),
            )
        })
}

/// A `$batch` sub-request: injected failure, route, mailbox, throttle, handler; no waiting.
pub fn run_subrequest(
    sim: &Simulator,
    claims: &Claims,
    request: &GraphRequest<'_>,
) -> Result<GraphReply, GraphError> {
    if let Some(failure) = lock(&sim.switches).take_failure(&request.path_and_query()) {
        return Err(failure.to_error());
    }
    let Route::Mailbox {
        version,
        target,
        rest,
    } = parse_route(request.path)?
    else {
        return Err(GraphError::bad_request(
            "A $batch request cannot contain a $batch request.",
        ));
    };
    let (index, mailbox_key) = {
        let store = lock(&sim.store);
        let index = resolve_mailbox(&store, claims, &target)?;
        (index, store.mailboxes[index].upn.to_ascii_lowercase())
    };
    let settings = lock(&sim.switches).throttle.clone();
    let _slot = sim.throttle.admit(
        settings.as_ref(),
        &claims.app_id,
        &mailbox_key,
        Instant::now(),
    )?;
    dispatch(sim, index, claims, &version, &rest, request)
}

/// Runs an admitted request against mailbox `index`.
pub fn dispatch(
    sim: &Simulator,
    index: usize,
    claims: &Claims,
    version: &str,
    rest: &[String],
    request: &GraphRequest<'_>,
) -> Result<GraphReply, GraphError> {
    let preferences = request.preferences();
    let query = Query::parse(request.query);
    let searching = query.get("search").is_some();
    let context = Context {
        version,
        path: request.path,
        method: request.method,
        body: request.body,
        mode: if preferences.wants_immutable_ids() && !searching {
            IdMode::Immutable
        } else {
            IdMode::Regular
        },
        query,
        preferences,
    };
    let segments: Vec<&str> = rest.iter().map(String::as_str).collect();
    let reply = if segments == ["translateExchangeIds"] {
        if request.method != "POST" {
            return Err(GraphError::method_not_allowed());
        }
        let forbidden = lock(&sim.switches).app_only_translate_forbidden;
        let outcome = {
            let store = lock(&sim.store);
            let mailbox = store
                .mailboxes
                .get(index)
                .ok_or_else(GraphError::item_not_found)?;
            translate::translate(mailbox, claims, forbidden, version, request.body)
        };
        if let Some(count) = outcome.ids {
            lock(&sim.stats).record_translate(count);
        }
        outcome.result?
    } else {
        let mut store = lock(&sim.store);
        let mailbox = store
            .mailboxes
            .get_mut(index)
            .ok_or_else(GraphError::item_not_found)?;
        route(&context, mailbox, &segments)?
    };
    let mut applied = Vec::new();
    if let Some(size) = context.page_size_preference() {
        applied.push(format!("odata.maxpagesize={size}"));
    }
    // Graph echoes the preference even for `$search`, where it then ignores it.
    if context.preferences.wants_immutable_ids() {
        applied.push("IdType=\"ImmutableId\"".to_string());
    }
    Ok(if applied.is_empty() {
        reply
    } else {
        reply.with_header("Preference-Applied", applied.join(", "))
    })
}

/// What every handler needs to know about the request it answers.
pub(super) struct Context<'a> {
    pub version: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    pub body: &'a [u8],
    pub mode: IdMode,
    pub query: Query,
    pub preferences: Preferences,
}

impl Context<'_> {
    pub fn link(&self, query: &str) -> String {
        format!("{GRAPH_ORIGIN}{}?{query}", self.path)
    }

    pub fn context_url(&self, mailbox: &Mailbox, what: &str) -> String {
        format!(
            "{GRAPH_ORIGIN}/{}/$metadata#users('{}')/{what}",
            self.version, mailbox.user_id
        )
    }

    fn is_delta(&self) -> bool {
        self.path
            .trim_end_matches('/')
            .to_ascii_lowercase()
            .ends_with("/delta")
    }

    fn page_size_preference(&self) -> Option<usize> {
        self.is_delta()
            .then(|| self.preferences.max_page_size())
            .flatten()
    }

    fn selected(&self) -> Vec<String> {
        self.query.get("select").map_or_else(Vec::new, |list| {
            list.split(',')
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
                .collect()
        })
    }

    fn json_body(&self) -> Result<Map<String, Value>, GraphError> {
        match serde_json::from_slice(self.body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(translate::invalid_payload()),
        }
    }
}

fn route(
    context: &Context<'_>,
    mailbox: &mut Mailbox,
    segments: &[&str],
) -> Result<GraphReply, GraphError> {
    let get = context.method == "GET";
    match segments {
        [] if get => Ok(GraphReply::json(200, resources::user_json(mailbox))),
        ["mailFolders"] if get => {
            let value: Vec<Value> = mailbox
                .folders
                .iter()
                .filter(|folder| folder.kind == FolderKind::Mail)
                .map(|folder| resources::folder_json(mailbox, folder))
                .collect();
            Ok(GraphReply::json(
                200,
                json!({"@odata.context": context.context_url(mailbox, "mailFolders"), "value": value}),
            ))
        }
        ["mailFolders", folder] if get => {
            let folder = resolve_folder(mailbox, folder)?;
            Ok(GraphReply::json(
                200,
                resources::folder_json(mailbox, folder),
            ))
        }
        ["mailFolders", folder, "childFolders"] if get => {
            resolve_folder(mailbox, folder)?;
            Ok(GraphReply::json(200, json!({"value": []})))
        }
        ["mailFolders", folder, "messages"] => {
            let counter = resolve_folder(mailbox, folder)?.counter;
            match context.method {
                "GET" => list_items(
                    context,
                    mailbox,
                    ItemKind::Message,
                    Some(counter),
                    "messages",
                ),
                "POST" => create_message(context, mailbox, counter),
                _ => Err(GraphError::method_not_allowed()),
            }
        }
        ["mailFolders", folder, "messages", "delta"] => {
            if !get {
                return Err(GraphError::method_not_allowed());
            }
            let counter = resolve_folder(mailbox, folder)?.counter;
            delta(context, mailbox, Some(counter))
        }
        ["mailFolders", folder, "messages", id, tail @ ..] => {
            resolve_folder(mailbox, folder)?;
            message_item(context, mailbox, id, tail)
        }
        ["messages"] => match context.method {
            "GET" => list_items(context, mailbox, ItemKind::Message, None, "messages"),
            "POST" => create_message(context, mailbox, 0x010f),
            _ => Err(GraphError::method_not_allowed()),
        },
        ["messages", "delta"] if get => delta(context, mailbox, None),
        ["messages", "delta"] => Err(GraphError::method_not_allowed()),
        ["messages", id, tail @ ..] => message_item(context, mailbox, id, tail),
        ["events"] | ["calendar", "events"] if get => {
            list_items(context, mailbox, ItemKind::Event, None, "events")
        }
        ["events", id] | ["calendar", "events", id] => {
            item_operation(context, mailbox, ItemKind::Event, id)
        }
        ["contacts"] if get => list_items(context, mailbox, ItemKind::Contact, None, "contacts"),
        ["contacts", id] => item_operation(context, mailbox, ItemKind::Contact, id),
        []
        | ["mailFolders"]
        | ["mailFolders", _]
        | ["mailFolders", _, "childFolders"]
        | ["events"]
        | ["calendar", "events"]
        | ["contacts"] => Err(GraphError::method_not_allowed()),
        [.., last] => Err(GraphError::unknown_segment(last)),
    }
}

fn lookup_error(lookup: Lookup) -> GraphError {
    match lookup {
        Lookup::Malformed => GraphError::malformed_id(),
        Lookup::Foreign | Lookup::NotFound => GraphError::item_not_found(),
    }
}

fn resolve_folder<'m>(
    mailbox: &'m Mailbox,
    reference: &str,
) -> Result<&'m super::store::Folder, GraphError> {
    mailbox.resolve_folder(reference).map_err(lookup_error)
}

fn find(mailbox: &Mailbox, id: &str, kind: ItemKind) -> Result<u64, GraphError> {
    mailbox
        .find_item(id, kind)
        .map(|item| item.immutable)
        .map_err(lookup_error)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}

fn render(context: &Context<'_>, mailbox: &Mailbox, immutable: u64) -> Result<Value, GraphError> {
    let item = mailbox
        .item(immutable)
        .ok_or_else(GraphError::item_not_found)?;
    Ok(resources::select(
        resources::item_json(mailbox, item, context.mode),
        &context.selected(),
    ))
}

fn item_operation(
    context: &Context<'_>,
    mailbox: &mut Mailbox,
    kind: ItemKind,
    id: &str,
) -> Result<GraphReply, GraphError> {
    let immutable = find(mailbox, id, kind)?;
    match context.method {
        "GET" => Ok(GraphReply::json(200, render(context, mailbox, immutable)?)),
        "PATCH" => {
            let changes = context.json_body()?;
            mailbox.patch_item(immutable, &changes, now());
            Ok(GraphReply::json(200, render(context, mailbox, immutable)?))
        }
        "DELETE" => {
            mailbox.delete_item(immutable);
            Ok(GraphReply::empty(204))
        }
        _ => Err(GraphError::method_not_allowed()),
    }
}

fn message_item(
    context: &Context<'_>,
    mailbox: &mut Mailbox,
    id: &str,
    tail: &[&str],
) -> Result<GraphReply, GraphError> {
    match tail {
        [] => item_operation(context, mailbox, ItemKind::Message, id),
        ["move"] if context.method == "POST" => {
            let immutable = find(mailbox, id, ItemKind::Message)?;
            let body = context.json_body()?;
            let destination = body
                .get("destinationId")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    GraphError::bad_request("The parameter 'destinationId' is required.")
                })?;
            let folder = resolve_folder(mailbox, destination)?;
            if folder.kind != FolderKind::Mail {
                return Err(GraphError::new(
                    400,
                    "ErrorMoveCopyFailed",
                    "A message can only be moved to a mail folder.",
                ));
            }
            let counter = folder.counter;
            mailbox.move_item(immutable, counter);
            Ok(GraphReply::json(201, render(context, mailbox, immutable)?))
        }
        ["attachments"] if context.method == "GET" => {
            let immutable = find(mailbox, id, ItemKind::Message)?;
            let item = mailbox
                .item(immutable)
                .ok_or_else(GraphError::item_not_found)?;
            let value: Vec<Value> = item
                .attachments
                .iter()
                .map(|attachment| {
                    resources::attachment_json(mailbox, item, attachment, context.mode)
                })
                .collect();
            Ok(GraphReply::json(
                200,
                json!({"@odata.context": context.context_url(mailbox, "messages/attachments"), "value": value}),
            ))
        }
        ["attachments", attachment_id] if context.method == "GET" => {
            let immutable = find(mailbox, id, ItemKind::Message)?;
            let decoded = ids::from_rest(attachment_id)
                .and_then(|bytes| ids::parse_id_bytes(&bytes))
                .ok_or_else(GraphError::malformed_id)?;
            let key = match decoded {
                ids::ExchangeId::Attachment(_, key)
                | ids::ExchangeId::ImmutableAttachment(_, key) => key,
                _ => return Err(GraphError::malformed_id()),
            };
            let parent = mailbox.find_decoded(&decoded).map_err(lookup_error)?;
            if parent.immutable != immutable {
                return Err(GraphError::item_not_found());
            }
            let attachment = parent
                .attachments
                .iter()
                .find(|attachment| attachment.key == key)
                .ok_or_else(GraphError::item_not_found)?;
            Ok(GraphReply::json(
                200,
                resources::attachment_json(mailbox, parent, attachment, context.mode),
            ))
        }
        ["move"] | ["attachments"] | ["attachments", _] => Err(GraphError::method_not_allowed()),
        [.., last] => Err(GraphError::unknown_segment(last)),
    }
}

/// Page size: `$top` (1..=1000), default 10 as Graph uses for mail.
fn page_size(context: &Context<'_>) -> Result<usize, GraphError> {
    match context.query.get("top") {
        None => Ok(context.preferences.max_page_size().unwrap_or(10).min(1000)),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=1000).contains(top))
            .ok_or_else(|| GraphError::bad_request(format!("Invalid value '{text}' for $top."))),
    }
}

fn list_items(
    context: &Context<'_>,
    mailbox: &Mailbox,
    kind: ItemKind,
    folder: Option<u64>,
    what: &str,
) -> Result<GraphReply, GraphError> {
    let top = page_size(context)?;
    let skip = match context.query.get("skip") {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| GraphError::bad_request(format!("Invalid value '{text}' for $skip.")))?,
    };
    let search = context.query.get("search").map(|term| {
        let term = term.trim().trim_matches('"');
        term.rsplit(':').next().unwrap_or(term).to_lowercase()
    });
    let items: Vec<_> = mailbox
        .list(kind, folder)
        .into_iter()
        .filter(|item| {
            search.as_deref().is_none_or(|term| {
                ["subject", "bodyPreview"].iter().any(|field| {
                    item.fields
                        .get(*field)
                        .and_then(Value::as_str)
                        .is_some_and(|text| text.to_lowercase().contains(term))
                })
            })
        })
        .collect();
    let selected = context.selected();
    let value: Vec<Value> = items
        .iter()
        .skip(skip)
        .take(top)
        .map(|item| resources::select(resources::item_json(mailbox, item, context.mode), &selected))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        context.context_url(mailbox, what).into(),
    );
    body.insert("value".into(), Value::Array(value));
    let next = skip.saturating_add(top);
    if next < items.len() {
        let mut query = context.query.raw_without(&["skip"]);
        query.push(format!("%24skip={next}"));
        body.insert(
            "@odata.nextLink".into(),
            context.link(&query.join("&")).into(),
        );
    }
    Ok(GraphReply::json(200, Value::Object(body)))
}

fn create_message(
    context: &Context<'_>,
    mailbox: &mut Mailbox,
    folder: u64,
) -> Result<GraphReply, GraphError> {
    let given = context.json_body()?;
    let time = now();
    let date = super::reply::rfc3339(time);
    let content = given
        .get("body")
        .and_then(|body| body.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut fields = Map::new();
    fields.insert("receivedDateTime".into(), date.clone().into());
    fields.insert("sentDateTime".into(), date.into());
    fields.insert("subject".into(), "".into());
    fields.insert(
        "bodyPreview".into(),
        content.chars().take(255).collect::<String>().into(),
    );
    fields.insert("importance".into(), "normal".into());
    fields.insert("isRead".into(), true.into());
    fields.insert("isDraft".into(), (folder == 0x010f).into());
    fields.insert(
        "body".into(),
        json!({"contentType": "text", "content": content}),
    );
    fields.insert(
        "from".into(),
        json!({"emailAddress": {"name": mailbox.display_name, "address": mailbox.upn}}),
    );
    fields.insert("toRecipients".into(), json!([]));
    for (name, value) in given {
        if !COMPUTED_PROPERTIES.contains(&name.as_str()) && !name.starts_with('@') {
            fields.insert(name, value);
        }
    }
    let immutable = mailbox.insert(ItemKind::Message, folder, time, fields, Vec::new());
    let item = mailbox
        .item(immutable)
        .ok_or_else(GraphError::item_not_found)?;
    let id = mailbox.item_id(item, context.mode);
    let location = format!(
        "{GRAPH_ORIGIN}/{}/users/{}/messages/{}",
        context.version,
        mailbox.user_id,
        utf8_percent_encode(&id, NON_ALPHANUMERIC)
    );
    Ok(GraphReply::json(201, render(context, mailbox, immutable)?)
        .with_header("Location", location))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{token, SEED_USERS};
    use http::HeaderValue;

    fn claims(user: usize) -> Claims {
        let seed = SEED_USERS[user];
        token::parse_authorization(&format!(
            "Bearer {}",
            token::mint(seed.tenant_id, seed.user_id, "app", false)
        ))
        .unwrap()
    }

    fn run(
        sim: &Simulator,
        method: &str,
        path_and_query: &str,
        prefer: Option<&str>,
        body: &str,
    ) -> Result<GraphReply, GraphError> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut headers = HeaderMap::new();
        if let Some(prefer) = prefer {
            headers.insert("prefer", HeaderValue::from_str(prefer).unwrap());
        }
        let request = GraphRequest {
            method,
            path,
            query,
            headers: &headers,
            body: body.as_bytes(),
        };
        run_subrequest(sim, &claims(0), &request)
    }

    const IMMUTABLE: Option<&str> = Some("IdType=\"ImmutableId\"");

    #[test]
    fn routes_parse_versions_users_and_case_insensitive_words() {
        assert_eq!(
            parse_route("/beta/users/AdeleV%40contoso.onmicrosoft.com/MAILFOLDERS/inbox").unwrap(),
            Route::Mailbox {
                version: "beta".into(),
                target: Target::User("AdeleV@contoso.onmicrosoft.com".into()),
                rest: vec!["mailFolders".into(), "inbox".into()],
            }
        );
        assert_eq!(
            parse_route("/v1.0/$batch").unwrap(),
            Route::Batch {
                version: "v1.0".into()
            }
        );
        assert_eq!(
            parse_route("/v1.0/%24batch").unwrap(),
            Route::Batch {
                version: "v1.0".into()
            }
        );
        assert_eq!(parse_route("/v2.0/me").err().unwrap().status, 404);
        assert_eq!(
            parse_route("/v1.0/groups").err().unwrap().code,
            "BadRequest"
        );
    }

    #[test]
    fn list_pages_with_an_absolute_percent_encoded_skip_link() {
        let sim = Simulator::new();
        let reply = run(
            &sim,
            "GET",
            "/v1.0/me/mailFolders/inbox/messages?$top=10&$select=subject",
            None,
            "",
        )
        .unwrap();
        let body = reply.body.unwrap();
        assert_eq!(body["value"].as_array().unwrap().len(), 10);
        assert_eq!(
            body["@odata.nextLink"],
            "https://graph.microsoft.com/v1.0/me/mailFolders/inbox/messages?%24top=10&%24select=subject&%24skip=10"
        );
        assert!(body["value"][0].get("bodyPreview").is_none());
        let last = run(
            &sim,
            "GET",
            "/v1.0/me/mailFolders/inbox/messages?%24top=10&%24skip=20",
            None,
            "",
        )
        .unwrap();
        let body = last.body.unwrap();
        assert_eq!(body["value"].as_array().unwrap().len(), 5);
        assert!(body.get("@odata.nextLink").is_none());
    }

    #[test]
    fn prefer_immutable_selects_immutable_ids_and_is_echoed() {
        let sim = Simulator::new();
        let reply = run(&sim, "GET", "/v1.0/me/messages?$top=3", IMMUTABLE, "").unwrap();
        assert!(reply
            .headers
            .contains(&("Preference-Applied".into(), "IdType=\"ImmutableId\"".into())));
        let body = reply.body.unwrap();
        for message in body["value"].as_array().unwrap() {
            assert!(message["id"]
                .as_str()
                .unwrap()
                .starts_with(ids::IMMUTABLE_REST_PREFIX));
            assert!(message["parentFolderId"]
                .as_str()
                .unwrap()
                .starts_with("AAMkA"));
        }
    }

    #[test]
    fn search_ignores_prefer_but_still_echoes_it() {
        let sim = Simulator::new();
        let reply = run(
            &sim,
            "GET",
            "/v1.0/me/messages?$search=%22Team%20lunch%22",
            IMMUTABLE,
            "",
        )
        .unwrap();
        assert!(reply
            .headers
            .iter()
            .any(|(name, _)| name == "Preference-Applied"));
        let body = reply.body.unwrap();
        let found = body["value"].as_array().unwrap();
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|m| m["id"].as_str().unwrap().len() == 152));
    }

    #[test]
    fn move_gives_a_new_id_and_the_old_one_answers_404() {
        let sim = Simulator::new();
        let list = run(&sim, "GET", "/v1.0/me/messages?$top=1", None, "")
            .unwrap()
            .body
            .unwrap();
        let old = list["value"][0]["id"].as_str().unwrap().to_string();
        let immutable = run(
            &sim,
            "GET",
            &format!("/v1.0/me/messages/{old}"),
            IMMUTABLE,
            "",
        )
        .unwrap()
        .body
        .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let moved = run(
            &sim,
            "POST",
            &format!("/v1.0/me/messages/{old}/move"),
            None,
            r#"{"destinationId":"archive"}"#,
        )
        .unwrap();
        assert_eq!(moved.status, 201);
        let moved = moved.body.unwrap();
        assert_ne!(moved["id"], old.as_str());
        let gone = run(&sim, "GET", &format!("/v1.0/me/messages/{old}"), None, "")
            .err()
            .unwrap();
        assert_eq!(
            (gone.status, gone.code.as_str()),
            (404, "ErrorItemNotFound")
        );
        let still = run(
            &sim,
            "GET",
            &format!("/v1.0/me/messages/{immutable}"),
            None,
            "",
        )
        .unwrap()
        .body
        .unwrap();
        assert_eq!(still["id"], moved["id"]);
        let moved_immutable = run(
            &sim,
            "POST",
            &format!("/v1.0/me/messages/{immutable}/move"),
            IMMUTABLE,
            r#"{"destinationId":"inbox"}"#,
        )
        .unwrap();
        assert_eq!(moved_immutable.body.unwrap()["id"], immutable.as_str());
    }

    #[test]
    fn malformed_ids_and_bodies_get_400() {
        let sim = Simulator::new();
        let error = run(&sim, "GET", "/v1.0/me/messages/not-an-id", None, "")
            .err()
            .unwrap();
        assert_eq!(
            (error.status, error.code.as_str()),
            (400, "ErrorInvalidIdMalformed")
        );
        let error = run(&sim, "POST", "/v1.0/me/messages", None, "{nope")
            .err()
            .unwrap();
        assert_eq!((error.status, error.code.as_str()), (400, "BadRequest"));
        let error = run(&sim, "GET", "/v1.0/me/mailFolders/nowhere", None, "")
            .err()
            .unwrap();
        assert_eq!(error.code, "ErrorInvalidIdMalformed");
        let error = run(&sim, "GET", "/v1.0/me/frobnicate", None, "")
            .err()
            .unwrap();
        assert_eq!(
            error.message,
            "Resource not found for the segment 'frobnicate'."
        );
        let error = run(
            &sim,
            "GET",
            "/v1.0/users/nobody@contoso.onmicrosoft.com/messages",
            None,
            "",
        )
        .err()
        .unwrap();
        assert_eq!(error.code, "ErrorInvalidUser");
        let error = run(
            &sim,
            "GET",
            "/v1.0/users/meganb@fabrikam.onmicrosoft.com/messages",
            None,
            "",
        )
        .err()
        .unwrap();
        assert_eq!(error.status, 404);
    }

    #[test]
    fn create_answers_201_with_an_absolute_location() {
        let sim = Simulator::new();
        let reply = run(
            &sim,
            "POST",
            "/v1.0/me/messages",
            IMMUTABLE,
            r#"{"subject":"hi","body":{"contentType":"text","content":"yo"}}"#,
        )
        .unwrap();
        assert_eq!(reply.status, 201);
        let body = reply.body.unwrap();
        let id = body["id"].as_str().unwrap();
        let location = &reply
            .headers
            .iter()
            .find(|(n, _)| n == "Location")
            .unwrap()
            .1;
        assert!(location.starts_with("https://graph.microsoft.com/v1.0/users/5c7bb4a6-2a8e-4d3a-9a7f-1f0c6a3b8e01/messages/AAkALg"));
        assert_eq!(body["subject"], "hi");
        assert_eq!(body["isDraft"], true);
        let fetched = run(
            &sim,
            "GET",
            &format!("/v1.0/me/mailFolders/drafts/messages/{id}"),
            None,
            "",
        )
        .unwrap();
        assert_eq!(fetched.body.unwrap()["bodyPreview"], "yo");
    }

    #[test]
    fn attachments_list_and_get_in_both_id_kinds() {
        let sim = Simulator::new();
        for prefer in [None, IMMUTABLE] {
            let list = run(
                &sim,
                "GET",
                "/v1.0/me/mailFolders/inbox/messages?$top=25",
                prefer,
                "",
            )
            .unwrap()
            .body
            .unwrap();
            let with = list["value"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["hasAttachments"] == true)
                .unwrap();
            let id = with["id"].as_str().unwrap();
            let attachments = run(
                &sim,
                "GET",
                &format!("/v1.0/me/messages/{id}/attachments"),
                prefer,
                "",
            )
            .unwrap()
            .body
            .unwrap();
            let attachment_id = attachments["value"][0]["id"].as_str().unwrap();
            let one = run(
                &sim,
                "GET",
                &format!("/v1.0/me/messages/{id}/attachments/{attachment_id}"),
                prefer,
                "",
            )
            .unwrap()
            .body
            .unwrap();
            assert_eq!(one["id"], attachment_id);
            assert_eq!(one["contentType"], "text/plain");
        }
    }

    #[test]
    fn events_and_contacts_are_listed_and_fetched() {
        let sim = Simulator::new();
        let events = run(&sim, "GET", "/beta/me/calendar/events", IMMUTABLE, "")
            .unwrap()
            .body
            .unwrap();
        assert_eq!(events["value"].as_array().unwrap().len(), 3);
        let id = events["value"][0]["id"].as_str().unwrap();
        assert_eq!(
            run(&sim, "GET", &format!("/beta/me/events/{id}"), None, "")
                .unwrap()
                .status,
            200
        );
        let contacts = run(
            &sim,
            "GET",
            "/v1.0/users/ADELEV@contoso.onmicrosoft.com/contacts",
            None,
            "",
        )
        .unwrap()
        .body
        .unwrap();
        assert_eq!(contacts["value"].as_array().unwrap().len(), 3);
        let id = contacts["value"][0]["id"].as_str().unwrap();
        assert_eq!(
            run(&sim, "DELETE", &format!("/v1.0/me/contacts/{id}"), None, "")
                .unwrap()
                .status,
            204
        );
        assert_eq!(
            run(&sim, "GET", &format!("/v1.0/me/contacts/{id}"), None, "")
                .err()
                .unwrap()
                .status,
            404
        );
    }

    #[test]
    fn delta_pages_with_skiptoken_then_reports_changes_after_the_deltatoken() {
        let sim = Simulator::new();
        let mut url = "/v1.0/me/mailFolders/inbox/messages/delta".to_string();
        let mut seen = 0;
        let delta_link = loop {
            let body = run(&sim, "GET", &url, Some("odata.maxpagesize=10"), "")
                .unwrap()
                .body
                .unwrap();
            seen += body["value"].as_array().unwrap().len();
            if let Some(next) = body["@odata.nextLink"].as_str() {
                assert!(next.contains("/messages/delta?$skiptoken="));
                url = next.trim_start_matches(GRAPH_ORIGIN).to_string();
            } else {
                break body["@odata.deltaLink"].as_str().unwrap().to_string();
            }
        };
        assert_eq!(seen, 25);
        assert!(delta_link.contains("$deltatoken="));
        let delta_url = delta_link.trim_start_matches(GRAPH_ORIGIN).to_string();
        let empty = run(&sim, "GET", &delta_url, None, "")
            .unwrap()
            .body
            .unwrap();
        assert_eq!(empty["value"], json!([]));
        let first = run(
            &sim,
            "GET",
            "/v1.0/me/mailFolders/inbox/messages?$top=1",
            None,
            "",
        )
        .unwrap()
        .body
        .unwrap();
        let old = first["value"][0]["id"].as_str().unwrap().to_string();
        run(
            &sim,
            "POST",
            &format!("/v1.0/me/messages/{old}/move"),
            None,
            r#"{"destinationId":"archive"}"#,
        )
        .unwrap();
        let changes = run(&sim, "GET", &delta_url, None, "")
            .unwrap()
            .body
            .unwrap();
        assert_eq!(
            changes["value"],
            json!([{"@odata.type": "#microsoft.graph.message", "id": old, "@removed": {"reason": "deleted"}}])
        );
    }

    #[test]
    fn odd_paths_get_graph_errors_in_the_4xx_range() {
        let sim = Simulator::new();
        for path in [
            "/",
            "/v1.0",
            "/v1.0/me/messages/%FF%FE",
            "/v1.0/me/messages/AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A",
            "/v1.0/me/messages/AAMkAA==/attachments/x",
            "/v1.0/me/mailFolders/inbox/messages/delta?$skiptoken=%%%",
            "/v1.0/me/messages?$top=0",
            "/v1.0/me/messages?$top=abc&$skip=-1",
            "/v1.0/users",
            "/v1.0/me/events/junk/extra/segments",
        ] {
            let error = run(&sim, "GET", path, None, "").err().unwrap();
            assert!(
                (400..500).contains(&error.status),
                "{path}: {}",
                error.status
            );
        }
        let error = run(&sim, "PUT", "/v1.0/me/messages", None, "")
            .err()
            .unwrap();
        assert_eq!(error.status, 405);
    }
}
