//! Step 3, rewrite_ids: legacy Outlook item IDs that the app still sends (in the path, in
//! `$filter`, in JSON bodies and `$batch` sub-requests) become immutable IDs before the
//! request leaves, and, with `rewrite.responses`, regular IDs that Graph still returns
//! become immutable before the app sees them.
//!
//! Finding and replacing is `id_rewrite` (pure); looking up is `IdLookup` (cache, store,
//! then Graph's translateExchangeIds with the caller's own token). This file only decides
//! when to do it and what a failure means. It must run after identify (the tenant keys the
//! map) and before Prefer, which edits the same `$batch` body.

use std::borrow::Cow;

use http::header::AUTHORIZATION;
use http::{request, Uri};
use tracing::{debug, warn};

use super::{Outgoing, Proxy};
use crate::batch;
use crate::config::{OnError, SourceType};
use crate::errors::ProxyError;
use crate::hashing;
use crate::id_lookup::{Caller, IdLookup};
use crate::id_rewrite::{self, Candidate, JsonIds, Place};
use crate::identity::Identity;
use crate::telemetry::short_path;

/// Step 3's settings and its lookup, present only when `rewrite.enabled`.
pub(super) struct IdRewriting {
    pub lookup: IdLookup,
    pub sources: Vec<SourceType>,
    pub on_error: OnError,
    pub responses: bool,
}

/// What step 3 did to a request, for the answer's side of the exchange.
#[derive(Default)]
pub(super) struct Rewrote {
    /// Replaced IDs: on a 404 their mappings are forgotten (the item is gone).
    pub in_path: Vec<String>,
    /// Who asked, so IDs in the answer can be looked up with the same credential.
    pub caller: Option<Caller>,
    pub count: usize,
}

impl Proxy {
    pub(super) async fn rewrite_ids(
        &self,
        parts: &mut request::Parts,
        body: Outgoing,
        identity: &Identity,
    ) -> Result<(Outgoing, Rewrote), ProxyError> {
        let Some(ids) = &self.ids else {
            return Ok((body, Rewrote::default()));
        };
        let caller = caller(parts, &body, identity);
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        let in_target = id_rewrite::candidates_in_target(&target, &ids.sources);
        // The body is scanned once: the same scan gives the candidates and, after the
        // look-up, the places to splice the answers into.
        let scan = scan_body(&body, &ids.sources);
        let candidates: Cow<'_, [Candidate]> = if in_target.is_empty() {
            Cow::Borrowed(scan.candidates())
        } else {
            let mut all = in_target;
            all.extend_from_slice(scan.candidates());
            Cow::Owned(all)
        };
        let Some(caller) = caller else {
            if !candidates.is_empty() {
                debug!(path = %short_path(parts.uri.path()), "legacy IDs seen, but no token or mailbox to translate them with");
            }
            return Ok((body, Rewrote::default()));
        };
        let mut rewrote = Rewrote {
            caller: Some(caller.clone()),
            ..Rewrote::default()
        };
        if candidates.is_empty() {
            return Ok((body, rewrote));
        }
        let map = self.resolve(ids, &caller, &candidates).await?;
        if map.is_empty() {
            return Ok((body, rewrote));
        }
        let lookup = |id: &str| map.get(id).cloned();
        let borrowed = |id: &str| map.get(id).map(String::as_str);

        if let Some(applied) = id_rewrite::apply_to_target(&target, &ids.sources, &lookup) {
            match applied.output.parse::<http::uri::PathAndQuery>() {
                Ok(path_and_query) => {
                    let mut uri = std::mem::take(&mut parts.uri).into_parts();
                    uri.path_and_query = Some(path_and_query);
                    parts.uri = Uri::from_parts(uri).map_err(|_| {
                        ProxyError::BadRequest("The request target is not a valid URI.")
                    })?;
                    rewrote.count += applied.applied.len();
                    rewrote.in_path = applied
                        .applied
                        .iter()
                        .filter(|r| r.place == Place::PathSegment)
                        .map(|r| r.lookup.clone())
                        .collect();
                }
                Err(_) => warn!("a rewritten request target did not parse; the original was kept"),
            }
        }
        let body = match body {
            Outgoing::Held { bytes, batch } if !bytes.is_empty() => {
                let rewritten = match &scan {
                    BodyScan::Batch(_) => id_rewrite::apply_to_batch(&bytes, &ids.sources, &lookup)
                        .map(|applied| (applied.output, applied.applied.len())),
                    BodyScan::Json(json) => json.apply_counted(&bytes, &borrowed),
                    BodyScan::Nothing => None,
                };
                match rewritten {
                    Some((output, count)) => {
                        rewrote.count += count;
                        Outgoing::Held {
                            bytes: output.into(),
                            batch,
                        }
                    }
                    None => Outgoing::Held { bytes, batch },
                }
            }
            other => other,
        };
        Ok((body, rewrote))
    }

    /// IDs Graph still returns in regular form (`$search` ignores the Prefer header), made
    /// immutable so the app never stores a new legacy ID. None: nothing changed.
    pub(super) async fn rewrite_response_ids(
        &self,
        rewrote: &Rewrote,
        body: &[u8],
    ) -> Option<(Vec<u8>, usize)> {
        let ids = self.ids.as_ref().filter(|ids| ids.responses)?;
        let caller = rewrote.caller.as_ref()?;
        let scan = id_rewrite::scan_response(body, &ids.sources).ok()?;
        if scan.is_empty() {
            return None;
        }
        let map = match ids.lookup.resolve(caller, scan.candidates()).await {
            Ok(map) => map,
            Err(e) => {
                warn!(error = %e, "IDs in the answer could not be translated; sent as Graph wrote them");
                return None;
            }
        };
        let lookup = |id: &str| map.get(id).map(String::as_str);
        scan.apply_counted(body, &lookup)
    }

    /// A 404 for a rewritten ID: the item is gone, so its mapping is forgotten.
    pub(super) async fn forget_after_404(&self, rewrote: &Rewrote) {
        let (Some(ids), Some(caller)) = (&self.ids, &rewrote.caller) else {
            return;
        };
        for regular in &rewrote.in_path {
            ids.lookup.evict(&caller.tenant, regular).await;
        }
    }

    pub(super) fn wants_response_ids(&self, rewrote: &Rewrote) -> bool {
        rewrote.caller.is_some() && self.ids.as_ref().is_some_and(|ids| ids.responses)
    }

    async fn resolve(
        &self,
        ids: &IdRewriting,
        caller: &Caller,
        candidates: &[Candidate],
    ) -> Result<hashing::Map<String, String>, ProxyError> {
        match ids.lookup.resolve(caller, candidates).await {
            Ok(map) => Ok(map),
            Err(e) => match ids.on_error {
                OnError::Pass => {
                    warn!(error = %e, ids = candidates.len(), "ID translation failed; the original IDs are forwarded");
                    Ok(hashing::Map::default())
                }
                OnError::Fail => Err(ProxyError::Translate(e)),
            },
        }
    }
}

/// The caller's tenant, token and mailbox path; None without a token or a mailbox (there
/// is nobody to translate for).
fn caller(parts: &request::Parts, body: &Outgoing, identity: &Identity) -> Option<Caller> {
    let authorization = parts.headers.get(AUTHORIZATION)?.clone();
    let path = parts.uri.path();
    let mailbox_path = mailbox_path(path).or_else(|| match body {
        Outgoing::Held { bytes, batch: true } => {
            let version = path.trim_start_matches('/').split('/').next()?;
            batch::sub_request_urls(bytes)?.iter().find_map(|url| {
                let url = url.trim_start_matches('/');
                mailbox_path(&format!("/{version}/{url}"))
            })
        }
        _ => None,
    })?;
    Some(Caller {
        tenant: identity.tenant.as_str().to_owned(),
        mailbox_path,
        authorization,
        app_only: identity.claims.as_ref().is_some_and(|c| c.app_only),
    })
}

/// `/v1.0/users/{id}` or `/v1.0/me` from a request path, as the app wrote it: the mailbox
/// the translate call is sent to.
fn mailbox_path(path: &str) -> Option<String> {
    let mut segments = path.trim_start_matches('/').split(['/', '?']);
    let version = segments.next().filter(|v| !v.is_empty())?;
    match segments.next()? {
        "me" => Some(format!("/{version}/me")),
        "users" => {
            let user = segments.next().filter(|u| !u.is_empty())?;
            Some(format!("/{version}/users/{user}"))
        }
        other if other.starts_with("users(") => Some(format!("/{version}/{other}")),
        _ => None,
    }
}

/// What step 3 found in a held body.
enum BodyScan {
    /// Streamed, empty, or not JSON: nothing to rewrite.
    Nothing,
    Json(JsonIds),
    /// A `$batch` body, rewritten through its parsed form (`id_rewrite::apply_to_batch`).
    Batch(Vec<Candidate>),
}

impl BodyScan {
    fn candidates(&self) -> &[Candidate] {
        match self {
            BodyScan::Nothing => &[],
            BodyScan::Json(json) => json.candidates(),
            BodyScan::Batch(candidates) => candidates,
        }
    }
}

fn scan_body(body: &Outgoing, sources: &[SourceType]) -> BodyScan {
    match body {
        Outgoing::Held { bytes, batch: true } => {
            BodyScan::Batch(id_rewrite::candidates_in_batch(bytes, sources).unwrap_or_default())
        }
        Outgoing::Held {
            bytes,
            batch: false,
        } if !bytes.is_empty() => match id_rewrite::scan_json(bytes, sources) {
            Ok(json) => BodyScan::Json(json),
            Err(_) => BodyScan::Nothing,
        },
        _ => BodyScan::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::mailbox_path;

    #[test]
    fn the_mailbox_path_is_taken_from_the_request_as_written() {
        assert_eq!(
            mailbox_path("/v1.0/users/AdeleV@contoso.com/messages/x").as_deref(),
            Some("/v1.0/users/AdeleV@contoso.com")
        );
        assert_eq!(mailbox_path("/beta/me/events").as_deref(), Some("/beta/me"));
        assert_eq!(
            mailbox_path("/v1.0/users('a@b.c')/messages").as_deref(),
            Some("/v1.0/users('a@b.c')")
        );
        assert_eq!(mailbox_path("/v1.0/groups/x"), None);
        assert_eq!(mailbox_path("/v1.0/users"), None);
        assert_eq!(mailbox_path("/"), None);
    }
}
