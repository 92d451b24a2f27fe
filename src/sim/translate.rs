//! `POST {mailbox}/translateExchangeIds`: every ID format to every other, for items of the
//! mailbox in the path, with per-ID `errorDetails` inside a 200 as Graph does.
//!
//! Never fails the whole call for one bad ID; only the request shape (body, enum values,
//! more than 1000 IDs) or the app-only switch refuse the call.

use serde_json::{json, Value};

use super::ids::{self, ExchangeId, IdFormat, RegularItem};
use super::reply::{GraphError, GraphReply};
use super::resources::GRAPH_ORIGIN;
use super::store::{Item, Lookup, Mailbox};
use super::token::Claims;

/// Graph's documented limit per call.
pub const MAX_INPUT_IDS: usize = 1000;

/// The answer, and how many IDs were translated when the call was accepted.
pub struct Outcome {
    pub result: Result<GraphReply, GraphError>,
    pub ids: Option<usize>,
}

pub fn translate(
    mailbox: &Mailbox,
    claims: &Claims,
    app_only_forbidden: bool,
    version: &str,
    body: &[u8],
) -> Outcome {
    let refused = |error| Outcome {
        result: Err(error),
        ids: None,
    };
    if app_only_forbidden && claims.app_only {
        return refused(GraphError::new(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    let request = match parse_request(body) {
        Ok(request) => request,
        Err(error) => return refused(error),
    };
    let value: Vec<Value> = request
        .input_ids
        .iter()
        .map(
            |input| match translate_one(mailbox, input, request.source, request.target) {
                Ok(target) => json!({"sourceId": input, "targetId": target}),
                Err((code, message)) => {
                    json!({"sourceId": input, "errorDetails": {"code": code, "message": message}})
                }
            },
        )
        .collect();
    Outcome {
        ids: Some(request.input_ids.len()),
        result: Ok(GraphReply::json(
            200,
            json!({
                "@odata.context": format!("{GRAPH_ORIGIN}/{version}/$metadata#Collection(microsoft.graph.convertIdResult)"),
                "value": value,
            }),
        )),
    }
}

struct TranslateRequest {
    input_ids: Vec<String>,
    source: IdFormat,
    target: IdFormat,
}

fn parse_request(body: &[u8]) -> Result<TranslateRequest, GraphError> {
    let json: Value = serde_json::from_slice(body).map_err(|_| invalid_payload())?;
    let input_ids = json
        .get("inputIds")
        .and_then(Value::as_array)
        .ok_or_else(|| GraphError::bad_request("The parameter 'inputIds' is required."))?
        .iter()
        .map(|id| id.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| GraphError::bad_request("Every element of 'inputIds' must be a string."))?;
    let format = |name: &str| -> Result<IdFormat, GraphError> {
        let text = json.get(name).and_then(Value::as_str).ok_or_else(|| {
            GraphError::bad_request(format!("The parameter '{name}' is required."))
        })?;
        IdFormat::parse(text).ok_or_else(|| {
            GraphError::bad_request(format!("Requested value '{text}' was not found."))
        })
    };
    let source = format("sourceIdType")?;
    let target = format("targetIdType")?;
    if input_ids.len() > MAX_INPUT_IDS {
        return Err(GraphError::bad_request(format!(
            "The number of IDs exceeds the maximum of {MAX_INPUT_IDS}."
        )));
    }
    Ok(TranslateRequest {
        input_ids,
        source,
        target,
    })
}

pub fn invalid_payload() -> GraphError {
    GraphError::bad_request(
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
    )
}

type SlotError = (&'static str, &'static str);

const MALFORMED: SlotError = ("ErrorInvalidIdMalformed", "Id is malformed.");
const UNSUPPORTED: SlotError = (
    "ErrorUnsupportedTypeForConversion",
    "Only items (messages, events, contacts) can be converted.",
);

fn translate_one(
    mailbox: &Mailbox,
    input: &str,
    source: IdFormat,
    target: IdFormat,
) -> Result<String, SlotError> {
    let decoded = decode(mailbox, input, source)?;
    let item = mailbox
        .find_decoded(&decoded)
        .map_err(|lookup| match lookup {
            Lookup::Malformed => MALFORMED,
            Lookup::Foreign => (
                "ErrorItemNotFound",
                "The ID does not belong to this mailbox.",
            ),
            Lookup::NotFound => (
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            ),
        })?;
    Ok(encode(mailbox, item, target))
}

fn decode(mailbox: &Mailbox, input: &str, source: IdFormat) -> Result<ExchangeId, SlotError> {
    match source {
        IdFormat::EntryId => {
            let bytes = ids::from_binary(input).ok_or(MALFORMED)?;
            if ids::parse_folder_entry(&bytes).is_some() {
                return Err(UNSUPPORTED);
            }
            let (store_uid, folder, item) = ids::parse_message_entry(&bytes).ok_or(MALFORMED)?;
            // An entry ID carries no moniker: its store UID is what ties it to a mailbox.
            Ok(ExchangeId::Item(RegularItem {
                mailbox_guid: mailbox.keys.mailbox_guid,
                store_uid,
                folder,
                item,
            }))
        }
        IdFormat::ImmutableEntryId => {
            let bytes = ids::from_binary(input).ok_or(MALFORMED)?;
            ids::parse_immutable_entry(&bytes)
                .map(ExchangeId::ImmutableItem)
                .ok_or(MALFORMED)
        }
        IdFormat::EwsId | IdFormat::RestId | IdFormat::RestImmutableEntryId => {
            let bytes = match source {
                IdFormat::EwsId => ids::from_ews(input),
                _ => ids::from_rest(input),
            }
            .ok_or(MALFORMED)?;
            let decoded = ids::parse_id_bytes(&bytes).ok_or(MALFORMED)?;
            let immutable_source = source == IdFormat::RestImmutableEntryId;
            match decoded {
                ExchangeId::Item(_) if !immutable_source => Ok(decoded),
                ExchangeId::ImmutableItem(_) if immutable_source => Ok(decoded),
                ExchangeId::Folder { .. }
                | ExchangeId::Conversation { .. }
                | ExchangeId::Attachment(..)
                | ExchangeId::ImmutableAttachment(..) => Err(UNSUPPORTED),
                ExchangeId::Item(_) | ExchangeId::ImmutableItem(_) => Err(MALFORMED),
            }
        }
    }
}

fn encode(mailbox: &Mailbox, item: &Item, target: IdFormat) -> String {
    match target {
        IdFormat::EntryId => ids::to_binary(&ids::message_entry(
            &mailbox.keys,
            item.folder,
            item.counter,
        )),
        IdFormat::EwsId => ids::to_ews(&mailbox.regular_id_bytes(item)),
        IdFormat::ImmutableEntryId => {
            ids::to_binary(&ids::immutable_entry(&mailbox.keys, item.immutable))
        }
        IdFormat::RestId => ids::to_rest(&mailbox.regular_id_bytes(item)),
        IdFormat::RestImmutableEntryId => ids::to_rest(&mailbox.immutable_id_bytes(item)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::store::{IdMode, ItemKind, Store};

    fn delegated() -> Claims {
        Claims {
            tenant_id: "t".into(),
            object_id: "o".into(),
            app_id: "a".into(),
            app_only: false,
        }
    }

    fn call(mailbox: &Mailbox, ids: &[&str], source: &str, target: &str) -> Value {
        let body = json!({"inputIds": ids, "sourceIdType": source, "targetIdType": target});
        let outcome = translate(
            mailbox,
            &delegated(),
            false,
            "v1.0",
            body.to_string().as_bytes(),
        );
        outcome.result.unwrap().body.unwrap()
    }

    #[test]
    fn every_format_translates_to_every_other_and_back() {
        let store = Store::seeded();
        let mailbox = &store.mailboxes[0];
        let item = mailbox.list(ItemKind::Message, None)[3];
        for source in IdFormat::ALL {
            let input = encode(mailbox, item, source);
            for target in IdFormat::ALL {
                let answer = call(mailbox, &[&input], source.as_str(), target.as_str());
                assert_eq!(answer["value"][0]["sourceId"], input.as_str());
                assert_eq!(
                    answer["value"][0]["targetId"],
                    encode(mailbox, item, target).as_str(),
                    "{source:?} -> {target:?}"
                );
            }
        }
    }

    #[test]
    fn target_forms_have_the_documented_shapes() {
        let store = Store::seeded();
        let mailbox = &store.mailboxes[0];
        let item = mailbox.list(ItemKind::Message, None)[0];
        let entry = encode(mailbox, item, IdFormat::EntryId);
        assert_eq!(entry.len(), 95);
        assert!(entry.starts_with("AAAAA") && entry.ends_with('2'));
        let immutable_entry = encode(mailbox, item, IdFormat::ImmutableEntryId);
        assert_eq!(immutable_entry.len(), 63);
        assert!(immutable_entry.starts_with("AAAAAB2EAxGqZhHNm8gAqgAvxFoNA"));
        assert_eq!(
            encode(mailbox, item, IdFormat::RestImmutableEntryId),
            mailbox.item_id(item, IdMode::Immutable)
        );
    }

    #[test]
    fn stale_malformed_and_foreign_ids_get_per_id_errors_in_a_200() {
        let mut store = Store::seeded();
        let foreign = {
            let alex = &store.mailboxes[1];
            alex.item_id(alex.list(ItemKind::Message, None)[0], IdMode::Regular)
        };
        let mailbox = &mut store.mailboxes[0];
        let item = mailbox.list(ItemKind::Message, None)[0].clone();
        let stale = mailbox.item_id(&item, IdMode::Regular);
        mailbox.move_item(item.immutable, 0x0138).unwrap();
        let folder = mailbox.folder_id(0x010c);
        let answer = call(
            mailbox,
            &[&stale, "not an id", &foreign, &folder],
            "restId",
            "restImmutableEntryId",
        );
        let codes: Vec<&str> = (0..4)
            .map(|i| answer["value"][i]["errorDetails"]["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            codes,
            [
                "ErrorItemNotFound",
                "ErrorInvalidIdMalformed",
                "ErrorItemNotFound",
                "ErrorUnsupportedTypeForConversion"
            ]
        );
        assert_eq!(answer["value"][1]["sourceId"], "not an id");
        assert!(answer["value"][0].get("targetId").is_none());
    }

    #[test]
    fn plain_base64_entry_id_is_malformed_as_graph_reports() {
        let store = Store::seeded();
        let mailbox = &store.mailboxes[0];
        let item = mailbox.list(ItemKind::Message, None)[0];
        let plain = ids::to_ews(&ids::message_entry(
            &mailbox.keys,
            item.folder,
            item.counter,
        ));
        let answer = call(mailbox, &[&plain], "entryId", "restId");
        assert_eq!(
            answer["value"][0]["errorDetails"]["code"],
            "ErrorInvalidIdMalformed"
        );
    }

    #[test]
    fn more_than_1000_ids_or_bad_enums_are_refused() {
        let store = Store::seeded();
        let mailbox = &store.mailboxes[0];
        let many = vec!["x"; 1001];
        let body = json!({"inputIds": many, "sourceIdType": "restId", "targetIdType": "restImmutableEntryId"});
        let outcome = translate(
            mailbox,
            &delegated(),
            false,
            "v1.0",
            body.to_string().as_bytes(),
        );
        assert_eq!(outcome.result.err().unwrap().status, 400);
        assert_eq!(outcome.ids, None);
        let body = json!({"inputIds": [], "sourceIdType": "hexEntryId", "targetIdType": "restId"});
        let outcome = translate(
            mailbox,
            &delegated(),
            false,
            "v1.0",
            body.to_string().as_bytes(),
        );
        assert_eq!(outcome.result.err().unwrap().code, "BadRequest");
        let outcome = translate(mailbox, &delegated(), false, "v1.0", b"{");
        assert_eq!(outcome.result.err().unwrap().status, 400);
    }

    #[test]
    fn app_only_tokens_get_403_only_when_the_switch_is_on() {
        let store = Store::seeded();
        let mailbox = &store.mailboxes[0];
        let app = Claims {
            app_only: true,
            ..delegated()
        };
        let body =
            br#"{"inputIds":[],"sourceIdType":"restId","targetIdType":"restImmutableEntryId"}"#;
        let refused = translate(mailbox, &app, true, "v1.0", body)
            .result
            .err()
            .unwrap();
        assert_eq!(
            (refused.status, refused.code.as_str()),
            (403, "ErrorAccessDenied")
        );
        assert!(translate(mailbox, &app, false, "v1.0", body).result.is_ok());
        assert!(translate(mailbox, &delegated(), true, "v1.0", body)
            .result
            .is_ok());
    }
}
