//! `immutable-id-proxy translate`: migrates IDs an app has stored, one per input line, into
//! immutable IDs with translateExchangeIds, writing `source_id,target_id,error` CSV.
//!
//! Batches hold up to 1000 IDs of one source type (the call's contract); the format is
//! detected per ID with `--from auto`, a hex entry ID is converted to `entryId` first, and
//! anything that is not a translatable item ID becomes an error row without a call. Calls
//! are paced by the config's `requests_per_second` and retried on 429/503/504 (and on a
//! timeout or a broken connection) after `Retry-After` or a backoff. Rows are appended and
//! flushed per batch, so a run that stops can be started again: IDs already in `--output`
//! are skipped. With `--store` (proxy stopped) or `--admin` (proxy running) the mappings,
//! those of earlier runs in the output included, also go into the proxy's ID store, keyed
//! as the proxy looks them up (the REST form of an EWS ID, the `entryId` form of a hex ID).
//!
//! It must not print the token (it is read from an environment variable, never a flag,
//! so it stays out of shell history and `ps`), write a row for a batch whose call failed
//! (so a rerun retries it), or draw progress on a stderr that is not a terminal.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::config::{self, Config, Overrides};
use crate::exchange_id::{self, IdFormat, IdKind};
use crate::id_lookup::{self, LookupError, TranslateCall, MAX_IDS_PER_CALL};
use crate::id_store::{IdStore, StoreError};
use crate::identity::{self, TenantId};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::upstream::Upstream;
use output::{csv_field, Output};
use progress::Progress;

mod output;
mod progress;

/// A user segment (or the tenant in the `/idmap` query) keeps `@` (UPNs) and unreserved
/// characters raw.
const USER_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// The CLI needs no hot set in memory; the store is written through.
const STORE_CACHE_ENTRIES: usize = 1024;

/// Retries of one call, whatever the config says below this.
const MIN_RETRIES: u32 = 3;

#[derive(Args, Debug, Clone)]
pub struct TranslateArgs {
    /// The mailbox the IDs belong to: `me`, a UPN or a user ID
    #[arg(long)]
    pub mailbox: String,
    /// Format of the input IDs; `auto` detects it per ID
    #[arg(long, default_value = "auto", value_parser = ["auto", "restId", "ewsId", "entryId"])]
    pub from: String,
    /// Format to translate to
    #[arg(long, default_value = "restImmutableEntryId", value_parser = ["restImmutableEntryId", "immutableEntryId", "restId", "ewsId", "entryId"])]
    pub to: String,
    /// One ID per line; `-` reads stdin
    #[arg(long, default_value = "-")]
    pub input: String,
    /// CSV to append to (IDs already in it are skipped) [default: stdout]
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Environment variable holding the Graph access token
    #[arg(long, default_value = "GRAPH_TOKEN")]
    pub token_env: String,
    /// Also write the mappings into this ID store file (the proxy must be stopped)
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Also send the mappings to a running proxy's admin address (POST /idmap)
    #[arg(long)]
    pub admin: Option<String>,
    /// Config file for upstream and limits [default: ./config.toml; defaults when missing]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Upstream URL, overriding upstream.url
    #[arg(long)]
    pub upstream: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{flag}: {why}")]
    BadArgument { flag: &'static str, why: String },
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("--input: cannot read {path}")]
    Input {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--output: cannot use {}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--store: {0}")]
    Store(#[source] StoreError),
    #[error("translateExchangeIds failed after {tries} tries")]
    Graph {
        tries: u32,
        #[source]
        source: LookupError,
    },
    #[error("--admin: {0}")]
    Admin(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl TranslateError {
    fn exit_code(&self) -> u8 {
        match self {
            TranslateError::BadArgument { .. }
            | TranslateError::Config(_)
            | TranslateError::Input { .. }
            | TranslateError::Output { .. } => 2,
            TranslateError::Store(StoreError::Locked { .. }) => 1,
            TranslateError::Store(_) => 2,
            TranslateError::Graph { .. }
            | TranslateError::Admin(_)
            | TranslateError::Runtime(_) => 1,
        }
    }
}

/// Runs the command; the message of a failure goes to stderr with its cause chain.
pub fn run(args: TranslateArgs) -> ExitCode {
    match translate(args) {
        Ok(summary) => {
            eprintln!(
                "translate: {} translated, {} with errors, {} already in the output",
                summary.translated, summary.failed, summary.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut message = format!("translate: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("{message}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Summary {
    translated: u64,
    failed: u64,
    skipped: u64,
}

fn translate(args: TranslateArgs) -> Result<Summary, TranslateError> {
    let plan = Plan::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TranslateError::Runtime)?;
    runtime.block_on(plan.execute(&args))
}

/// Everything checked before the first call.
struct Plan {
    config: Config,
    authorization: HeaderValue,
    tenant: String,
    mailbox_path: String,
    from: Option<IdFormat>,
    to: IdFormat,
}

impl Plan {
    fn from_args(args: &TranslateArgs) -> Result<Plan, TranslateError> {
        let overrides = Overrides {
            listen: None,
            upstream: args.upstream.clone(),
        };
        // vars_os: a variable that is not Unicode cannot be one of ours and is skipped.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let config = config::load(args.config.as_deref(), env, &overrides)
            .map_err(TranslateError::Config)?
            .config;
        let to = format_named(&args.to).ok_or_else(|| bad("--to", "unknown format"))?;
        let from = match args.from.as_str() {
            "auto" => None,
            name => Some(format_named(name).ok_or_else(|| bad("--from", "unknown format"))?),
        };
        if (args.store.is_some() || args.admin.is_some()) && to != IdFormat::RestImmutableEntryId {
            let flag = if args.store.is_some() {
                "--store"
            } else {
                "--admin"
            };
            return Err(bad(
                flag,
                "the ID store holds restImmutableEntryId targets only (use --to restImmutableEntryId)",
            ));
        }
        let mailbox_path = mailbox_path(&args.mailbox)?;
        let token = std::env::var(&args.token_env)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                bad(
                    "--token-env",
                    format!(
                        "the environment variable {} is not set or empty",
                        args.token_env
                    ),
                )
            })?;
        let value = if token
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
        {
            token
        } else {
            format!("Bearer {token}")
        };
        let mut authorization = HeaderValue::from_str(&value).map_err(|_| {
            bad(
                "--token-env",
                format!(
                    "the token in {} holds characters a header cannot carry",
                    args.token_env
                ),
            )
        })?;
        authorization.set_sensitive(true);
        let tenant = identity::claims_from_authorization(authorization.as_bytes())
            .and_then(|claims| claims.tid)
            .unwrap_or_else(|| TenantId::unknown().as_str().to_owned());
        Ok(Plan {
            config,
            authorization,
            tenant,
            mailbox_path,
            from,
            to,
        })
    }

    async fn execute(self, args: &TranslateArgs) -> Result<Summary, TranslateError> {
        let input = read_input(&args.input)?;
        let upstream = Upstream::new(&self.config.upstream)
            .map_err(|e| bad("upstream.ca_file", e.to_string()))?;
        let admin = args.admin.as_deref().map(admin_uri).transpose()?;
        let store = match &args.store {
            Some(path) => Some(Arc::new(
                IdStore::open_path(
                    path,
                    NonZeroUsize::new(STORE_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
                    self.config.rewrite.negative_ttl,
                    Arc::new(Metrics::new()),
                )
                .map_err(TranslateError::Store)?,
            )),
            None => None,
        };
        let mut output = Output::open(args.output.clone())?;
        let sinks = Sinks {
            store,
            admin,
            tenant: self.tenant.clone(),
        };
        // Mappings of earlier runs may not have reached the store (or a different one):
        // writing them again is harmless.
        for chunk in output.earlier_mappings.chunks(MAX_IDS_PER_CALL) {
            sinks.send(&upstream, chunk).await?;
        }
        let rps = self
            .config
            .rate_limit
            .tenants
            .get(&self.tenant)
            .map_or(self.config.rate_limit.requests_per_second, |t| {
                t.requests_per_second
            });
        let mut run = Run {
            plan: &self,
            upstream,
            metrics: Metrics::new(),
            sinks,
            pace: if self.config.rate_limit.enabled {
                Duration::from_secs(1) / rps.get()
            } else {
                Duration::ZERO
            },
            next_call: None,
            summary: Summary::default(),
            progress: Progress::new(input.len()),
        };
        let mut groups: Vec<(IdFormat, Vec<Item>)> = Vec::new();
        for line in input {
            if !output.done.insert(line.clone()) {
                run.summary.skipped += 1;
                run.progress.advance(1);
                continue;
            }
            match prepare(&line, self.from) {
                Ok(item) => {
                    let source = item.source;
                    let group = match groups.iter().position(|(s, _)| *s == source) {
                        Some(i) => &mut groups[i].1,
                        None => {
                            groups.push((source, Vec::new()));
                            // Just pushed: the list is not empty, and `position` above
                            // returned an index inside it.
                            let last = groups.len() - 1;
                            &mut groups[last].1
                        }
                    };
                    group.push(item);
                    if group.len() >= MAX_IDS_PER_CALL {
                        let batch = std::mem::take(group);
                        run.batch(source, batch, &mut output).await?;
                    }
                }
                Err(why) => {
                    output.write_rows(&[(line.as_str(), "", why.as_str())])?;
                    run.summary.failed += 1;
                    run.progress.advance(1);
                }
            }
        }
        for (source, batch) in groups {
            if !batch.is_empty() {
                run.batch(source, batch, &mut output).await?;
            }
        }
        run.progress.finish();
        Ok(run.summary)
    }
}

fn bad(flag: &'static str, why: impl Into<String>) -> TranslateError {
    TranslateError::BadArgument {
        flag,
        why: why.into(),
    }
}

fn format_named(name: &str) -> Option<IdFormat> {
    [
        IdFormat::RestId,
        IdFormat::EwsId,
        IdFormat::EntryId,
        IdFormat::ImmutableEntryId,
        IdFormat::RestImmutableEntryId,
    ]
    .into_iter()
    .find(|f| f.graph_name() == name)
}

/// `/v1.0/me` or `/v1.0/users/{escaped}`: the path translateExchangeIds is sent under.
fn mailbox_path(mailbox: &str) -> Result<String, TranslateError> {
    let mailbox = mailbox.trim();
    if mailbox.eq_ignore_ascii_case("me") {
        return Ok("/v1.0/me".to_owned());
    }
    if mailbox.is_empty()
        || mailbox.len() > 320
        || mailbox.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "--mailbox",
            "expected `me`, a user principal name or a user ID",
        ));
    }
    Ok(format!(
        "/v1.0/users/{}",
        utf8_percent_encode(mailbox, USER_ESCAPED)
    ))
}

fn admin_uri(url: &str) -> Result<Uri, TranslateError> {
    let origin = config::Origin::parse(url.trim_end_matches('/'))
        .map_err(|why| bad("--admin", format!("not a base URL: {why}")))?;
    Uri::builder()
        .scheme(origin.scheme)
        .authority(origin.authority)
        .path_and_query("/idmap")
        .build()
        .map_err(|e| bad("--admin", e.to_string()))
}

/// The input's IDs, trimmed, blank lines dropped.
fn read_input(input: &str) -> Result<Vec<String>, TranslateError> {
    let failed = |source| TranslateError::Input {
        path: input.to_owned(),
        source,
    };
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(File::open(input).map_err(failed)?))
    };
    let mut ids = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(failed)?;
        let id = line.trim();
        if !id.is_empty() {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// One input ID ready for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    /// As read (trimmed): the CSV's `source_id`.
    original: String,
    /// What goes into `inputIds`.
    sent: String,
    source: IdFormat,
    /// The ID store key: what the proxy looks up for this ID.
    store_key: String,
}

/// Classifies one ID (with `--from auto`) or trusts the given format.
fn prepare(id: &str, from: Option<IdFormat>) -> Result<Item, String> {
    let item = |sent: String, source| Item {
        original: id.to_owned(),
        store_key: sent.clone(),
        sent,
        source,
    };
    if let Some(source) = from {
        return Ok(match source {
            IdFormat::EwsId => Item {
                store_key: exchange_id::ews_to_rest(id),
                ..item(id.to_owned(), source)
            },
            _ => item(id.to_owned(), source),
        });
    }
    if let Some(converted) = exchange_id::classify(id)
        .filter(|c| c.format == IdFormat::HexEntryId)
        .and_then(|_| exchange_id::hex_entry_id_to_entry_id(id))
    {
        return match exchange_id::classify(&converted) {
            Some(c) if c.is_translatable() => Ok(item(converted, IdFormat::EntryId)),
            _ => Err("not a translatable item ID (a hex entry ID of a folder?)".to_owned()),
        };
    }
    match exchange_id::classify(id) {
        // The same bytes in the REST alphabet: one source type fewer to batch.
        Some(c) if c.is_translatable() && c.format == IdFormat::EwsId => {
            Ok(item(exchange_id::ews_to_rest(id), IdFormat::RestId))
        }
        Some(c) if c.is_translatable() => Ok(item(id.to_owned(), c.format)),
        Some(c) => Err(format!(
            "not a translatable item ID ({} {})",
            c.format.graph_name(),
            kind_name(c.kind)
        )),
        None => Err("not an Exchange ID".to_owned()),
    }
}

fn kind_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Item => "item",
        IdKind::Folder => "folder",
        IdKind::Attachment => "attachment",
        IdKind::Occurrence => "occurrence",
        IdKind::Conversation => "conversation",
    }
}

/// The store key of a `source_id` written by an earlier run.
fn store_key_of(source_id: &str) -> String {
    match exchange_id::classify(source_id).map(|c| c.format) {
        Some(IdFormat::EwsId) => exchange_id::ews_to_rest(source_id),
        Some(IdFormat::HexEntryId) => {
            exchange_id::hex_entry_id_to_entry_id(source_id).unwrap_or_else(|| source_id.to_owned())
        }
        _ => source_id.to_owned(),
    }
}

struct Run<'a> {
    plan: &'a Plan,
    upstream: Upstream,
    metrics: Metrics,
    sinks: Sinks,
    /// The gap between two calls that keeps us within `requests_per_second`.
    pace: Duration,
    next_call: Option<Instant>,
    summary: Summary,
    progress: Progress,
}

impl Run<'_> {
    async fn batch(
        &mut self,
        source: IdFormat,
        items: Vec<Item>,
        output: &mut Output,
    ) -> Result<(), TranslateError> {
        let sent: Vec<String> = items.iter().map(|i| i.sent.clone()).collect();
        let results = self.call_with_retries(source, &sent).await?;
        let mut rows = Vec::with_capacity(items.len());
        let mut mappings = Vec::new();
        for item in &items {
            match results.get(&item.sent) {
                Some(Ok(target)) => {
                    self.summary.translated += 1;
                    mappings.push((item.store_key.clone(), target.clone()));
                    rows.push((item.original.as_str(), target.as_str(), String::new()));
                }
                Some(Err(error)) => {
                    self.summary.failed += 1;
                    let why = match (error.code.as_str(), error.message.as_str()) {
                        ("", "") => "translation failed".to_owned(),
                        (code, "") => code.to_owned(),
                        ("", message) => message.to_owned(),
                        (code, message) if code == message => code.to_owned(),
                        (code, message) => format!("{code}: {message}"),
                    };
                    rows.push((item.original.as_str(), "", why));
                }
                None => {
                    self.summary.failed += 1;
                    rows.push((
                        item.original.as_str(),
                        "",
                        "missing from Graph's answer".into(),
                    ));
                }
            }
        }
        let rows: Vec<(&str, &str, &str)> =
            rows.iter().map(|(s, t, e)| (*s, *t, e.as_str())).collect();
        // The mappings reach the store before the rows are written: a row in the output is
        // skipped next time, so its mapping must already be safe.
        self.sinks.send(&self.upstream, &mappings).await?;
        output.write_rows(&rows)?;
        self.progress.advance(items.len());
        Ok(())
    }

    async fn call_with_retries(
        &mut self,
        source: IdFormat,
        ids: &[String],
    ) -> Result<id_lookup::Translated, TranslateError> {
        let upstream_cfg = &self.plan.config.upstream;
        let retries = upstream_cfg.max_retries.max(MIN_RETRIES);
        let backoff = Backoff {
            base: upstream_cfg.retry_base_delay,
            max: upstream_cfg.retry_max_delay,
        };
        let call = TranslateCall {
            mailbox_path: &self.plan.mailbox_path,
            authorization: &self.plan.authorization,
            source,
            target: self.plan.to,
            ids,
        };
        let mut attempt = 0;
        loop {
            self.wait_for_pace().await;
            let error =
                match id_lookup::translate_exchange_ids(&self.upstream, &self.metrics, &call).await
                {
                    Ok(results) => return Ok(results),
                    Err(error) => error,
                };
            let retry_after = match &error {
                LookupError::Refused {
                    status: 429 | 503 | 504,
                    retry_after,
                    ..
                } => *retry_after,
                LookupError::Timeout(_)
                | LookupError::Unreachable(_)
                | LookupError::AnswerBroke(_) => None,
                _ => {
                    return Err(TranslateError::Graph {
                        tries: attempt + 1,
                        source: error,
                    })
                }
            };
            if attempt >= retries {
                return Err(TranslateError::Graph {
                    tries: attempt + 1,
                    source: error,
                });
            }
            attempt += 1;
            let wait = backoff.delay(attempt, retry_after, jitter());
            tracing::debug!(attempt, ?wait, error = %error, "retrying translateExchangeIds");
            tokio::time::sleep(wait).await;
        }
    }

    async fn wait_for_pace(&mut self) {
        if let Some(at) = self.next_call {
            tokio::time::sleep_until(at).await;
        }
        self.next_call = Some(Instant::now() + self.pace);
    }
}

/// A number in [0, 1) for the backoff's jitter, from the random bits of a v4 UUID.
fn jitter() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

/// Where mappings go besides the CSV.
struct Sinks {
    store: Option<Arc<IdStore>>,
    admin: Option<Uri>,
    tenant: String,
}

impl Sinks {
    async fn send(
        &self,
        upstream: &Upstream,
        mappings: &[(String, String)],
    ) -> Result<(), TranslateError> {
        if mappings.is_empty() {
            return Ok(());
        }
        if let Some(store) = &self.store {
            let (store, tenant, pairs) =
                (Arc::clone(store), self.tenant.clone(), mappings.to_vec());
            tokio::task::spawn_blocking(move || store.insert_many(&tenant, &pairs))
                .await
                .map_err(|e| TranslateError::Runtime(std::io::Error::other(e)))?
                .map_err(TranslateError::Store)?;
        }
        if let Some(admin) = &self.admin {
            post_idmap(upstream, admin, &self.tenant, mappings).await?;
        }
        Ok(())
    }
}

async fn post_idmap(
    upstream: &Upstream,
    admin: &Uri,
    tenant: &str,
    mappings: &[(String, String)],
) -> Result<(), TranslateError> {
    let mut body = String::from("source_id,target_id\n");
    for (source, target) in mappings {
        body.push_str(&csv_field(source));
        body.push(',');
        body.push_str(&csv_field(target));
        body.push('\n');
    }
    let path = format!(
        "/idmap?tenant={}",
        utf8_percent_encode(tenant, USER_ESCAPED)
    );
    let mut parts = admin.clone().into_parts();
    parts.path_and_query = Some(
        path.parse()
            .map_err(|_| TranslateError::Admin("cannot build the /idmap URL".into()))?,
    );
    let uri = Uri::from_parts(parts)
        .map_err(|_| TranslateError::Admin("cannot build the /idmap URL".into()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, "text/csv")
        .body(ProxyBody::full(body))
        .map_err(|e| TranslateError::Admin(e.to_string()))?;
    let metrics = Metrics::new();
    let response = upstream
        .send(request, &metrics)
        .await
        .map_err(|e| TranslateError::Admin(format!("POST /idmap failed: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = match response.into_body().collect().await {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes())
                .chars()
                .take(300)
                .collect(),
            Err(_) => String::new(),
        };
        return Err(TranslateError::Admin(format!(
            "POST /idmap answered {status}: {}",
            text.trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const REST_MSG: &str = "AAMkADgwNzM0ZDllLTVhYmItNDU2ZC1iMGI4LTFiOTAyOWQ2NDNlOQBGAAAAAADhDq91SSK4QIw9CuwFXFc0BwBmGstC9VnGQYyUCu1kIwJ2AAAAAAEMAABmGstC9VnGQYyUCu1kIwJ2AABM3JaPAAA=";
    const REST_FOLDER: &str = "AAMkADliMmU5YjJlLTVmMmQtNGQzNS1iYjA0LTdmZTA2NTI0MTE5YwAuAAAAAADdOMUbUmCfTKa7OC-fqjkdAQBnu3olF7NfToRyJ2f__TNcAAAAAAESAAA=";

    #[test]
    fn rest_ids_are_sent_as_they_are() {
        let item = prepare(REST_MSG, None).unwrap();
        assert_eq!(item.source, IdFormat::RestId);
        assert_eq!(item.sent, REST_MSG);
        assert_eq!(item.store_key, REST_MSG);
    }

    #[test]
    fn ews_ids_are_sent_and_stored_in_the_rest_alphabet() {
        // REST_MSG with a message counter of FF bytes, whose base64 has `/` and `-` forms.
        let mut bytes = exchange_id::decode_rest(REST_MSG).unwrap();
        bytes[105..108].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        let ews = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let rest = exchange_id::ews_to_rest(&ews);
        assert!(ews.contains('/') && rest.contains('-'));
        let item = prepare(&ews, None).unwrap();
        assert_eq!(item.original, ews);
        assert_eq!(item.source, IdFormat::RestId);
        assert_eq!(item.sent, rest);
        assert_eq!(store_key_of(&ews), rest);
    }

    #[test]
    fn hex_entry_ids_are_converted_to_entry_ids() {
        let bytes = exchange_id::decode_entry_id(&entry_id_of_rest_msg()).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        let item = prepare(&hex, None).unwrap();
        assert_eq!(item.source, IdFormat::EntryId);
        assert_eq!(item.sent, entry_id_of_rest_msg());
        assert_eq!(item.original, hex);
        assert_eq!(store_key_of(&hex), entry_id_of_rest_msg());
    }

    fn entry_id_of_rest_msg() -> String {
        // Bytes 43.. of a REST message ID are its 70-byte entry ID (graph-facts 2.4).
        let bytes = exchange_id::decode_rest(REST_MSG).unwrap();
        exchange_id::entry_id_from_bytes(&bytes[43..113])
    }

    #[test]
    fn folders_garbage_and_immutable_ids_are_error_rows() {
        assert!(prepare(REST_FOLDER, None).unwrap_err().contains("folder"));
        assert_eq!(
            prepare("not-an-id", None).unwrap_err(),
            "not an Exchange ID"
        );
        let immutable = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AZhrLQvVZxkGMlArtZCMCdgAATNyWjwAA";
        assert!(prepare(immutable, None)
            .unwrap_err()
            .starts_with("not a translatable item ID"));
    }

    #[test]
    fn a_given_format_is_trusted_without_classifying() {
        let item = prepare("whatever", Some(IdFormat::EntryId)).unwrap();
        assert_eq!(
            (item.sent.as_str(), item.source),
            ("whatever", IdFormat::EntryId)
        );
    }

    #[test]
    fn mailbox_becomes_the_users_path_or_me() {
        assert_eq!(mailbox_path("me").unwrap(), "/v1.0/me");
        assert_eq!(mailbox_path("ME").unwrap(), "/v1.0/me");
        assert_eq!(
            mailbox_path("adele@contoso.com").unwrap(),
            "/v1.0/users/adele@contoso.com"
        );
        assert_eq!(
            mailbox_path("o'brien@x.com").unwrap(),
            "/v1.0/users/o%27brien@x.com"
        );
        for bad_mailbox in ["", "a/b", "a b", "x\ty"] {
            let error = mailbox_path(bad_mailbox).unwrap_err();
            assert!(error.to_string().starts_with("--mailbox:"), "{error}");
            assert_eq!(error.exit_code(), 2);
        }
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
