//! The simulator's HTTP side: accepts HTTP/1.1 and h2 (plain or TLS), answers the control
//! routes under `/sim/` without a token, and runs every other request through token →
//! injected failure → route → mailbox → throttle → delay → handler.
//!
//! Never dies on one bad connection and never panics on a request; every answer is built
//! here, with a `request-id` header, Graph's error shape and optional compression.
//! `/sim/upload` and `/sim/download` stream, so their memory use does not grow with size.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::reply::{GraphError, GraphReply};
use super::routes::{dispatch, parse_route, resolve_mailbox, GraphRequest, Route};
use super::stats::{joined_prefer, LoggedRequest};
use super::{batch, lock, token, Simulator, APP_SERVICE_PRINCIPAL_ID, DEFAULT_APP_ID, SEED_USERS};

type Body = BoxBody<Bytes, std::io::Error>;

/// Largest Graph request body read into memory (Graph's own limit is 4 MB for most writes).
const MAX_GRAPH_BODY: usize = 16 * 1024 * 1024;
/// How long in-flight connections may finish after shutdown is asked for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
const DOWNLOAD_CHUNK: usize = 64 * 1024;
const GRAPH_CONTENT_TYPE: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// Generated download data: one static chunk served again and again, so no allocation.
static DOWNLOAD_PATTERN: [u8; DOWNLOAD_CHUNK] = download_pattern();

const fn download_pattern() -> [u8; DOWNLOAD_CHUNK] {
    let mut out = [0u8; DOWNLOAD_CHUNK];
    let mut i = 0;
    while i < DOWNLOAD_CHUNK {
        out[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    out
}

/// Serves the simulator on an already bound listener until `shutdown` completes, then lets
/// open connections finish (up to a few seconds). With `tls`, the acceptor's ALPN list
/// decides between h2 and HTTP/1.1; without, both are detected from the first bytes. Idle
/// keep-alive connections are closed after the listener's default 10 s.
pub async fn serve(
    sim: Arc<Simulator>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let idle = crate::server::ServeOptions::default().header_read_timeout;
    serve_with_idle_timeout(sim, listener, tls, idle, shutdown).await
}

/// `serve`, closing an idle keep-alive connection after `idle` (hyper's header read timeout
/// runs while a connection waits for its next request). The load and soak tests keep
/// connections longer than the proxy's upstream pool does (90 s): a server that idles out
/// first races the pool, and a request written onto a connection just as the server closes
/// it fails. That race is real with any such server, but it is not what those tests measure.
pub async fn serve_with_idle_timeout(
    sim: Arc<Simulator>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    idle: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The product's own listener loop: HTTP/1.1 and h2, TLS handshakes in the connection
    // task, never dying on one bad connection, draining on shutdown.
    let options = crate::server::ServeOptions {
        drain_grace: DRAIN_DEADLINE,
        header_read_timeout: idle,
        ..crate::server::ServeOptions::default()
    };
    crate::server::serve(
        listener,
        tls,
        move |request, _peer| {
            let sim = Arc::clone(&sim);
            async move {
                match answer(sim, request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        },
        options,
        shutdown,
    )
    .await;
    Ok(())
}

async fn answer(
    sim: Arc<Simulator>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let path = request.uri().path().to_string();
    let accept_encoding = header_text(request.headers(), "accept-encoding");
    let client_request_id = header_text(request.headers(), "client-request-id");
    let reply = if path == "/sim" || path.starts_with("/sim/") {
        control(&sim, request, &request_id).await
    } else {
        Reply::Graph(graph(&sim, request).await)
    };
    let compress = lock(&sim.switches).compress;
    Ok(match reply {
        Reply::Graph(result) => {
            let reply = result.unwrap_or_else(|error| error.into_reply(&request_id));
            graph_response(
                reply,
                &request_id,
                client_request_id,
                accept_encoding.filter(|_| compress),
            )
        }
        Reply::Raw(response) => response,
    })
}

enum Reply {
    Graph(Result<GraphReply, GraphError>),
    Raw(Response<Body>),
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn record_arrival(sim: &Simulator, parts: &http::request::Parts, body_len: u64) {
    let mut stats = lock(&sim.stats);
    stats.requests += 1;
    stats.record_prefer(joined_prefer(
        parts
            .headers
            .get_all("prefer")
            .iter()
            .map(HeaderValue::as_bytes),
    ));
    stats.log(LoggedRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
    });
}

async fn graph(sim: &Simulator, request: Request<Incoming>) -> Result<GraphReply, GraphError> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_GRAPH_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            record_arrival(sim, &parts, 0);
            return Err(GraphError::new(
                413,
                "RequestEntityTooLarge",
                "The request body is too large or was cut off.",
            ));
        }
    };
    record_arrival(sim, &parts, body.len() as u64);
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let graph_request = GraphRequest {
        method: parts.method.as_str(),
        path,
        query,
        headers: &parts.headers,
        body: &body,
    };
    if let Some(failure) = lock(&sim.switches).take_failure(&graph_request.path_and_query()) {
        return Err(failure.to_error());
    }
    let claims = match parts.headers.get(http::header::AUTHORIZATION) {
        None => return Err(GraphError::unauthenticated("Access token is empty.")),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(token::parse_authorization)
            .ok_or_else(|| {
                GraphError::unauthenticated("CompactToken parsing failed with error code: 80049217")
            })?,
    };
    match parse_route(path)? {
        Route::Batch { version } => {
            if parts.method != Method::POST {
                return Err(GraphError::method_not_allowed());
            }
            batch::handle(sim, &claims, &version, &body)
        }
        Route::Mailbox {
            version,
            target,
            rest,
        } => {
            let (index, mailbox_key) = {
                let store = lock(&sim.store);
                let index = resolve_mailbox(&store, &claims, &target)?;
                (index, store.mailboxes[index].upn.to_ascii_lowercase())
            };
            let (settings, delay_ms) = {
                let switches = lock(&sim.switches);
                (switches.throttle.clone(), switches.delay_ms)
            };
            let _slot = sim.throttle.admit(
                settings.as_ref(),
                &claims.app_id,
                &mailbox_key,
                Instant::now(),
            )?;
            if delay_ms > 0 {
                // Held in flight on purpose: delays are how tests provoke concurrency.
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            dispatch(sim, index, &claims, &version, &rest, &graph_request)
        }
    }
}

async fn control(sim: &Simulator, request: Request<Incoming>, request_id: &str) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        super::query::Query::parse(&query)
            .get(name)
            .map(str::to_string)
    };
    match (method, path.as_str()) {
        (Method::GET, "/sim/stats") => {
            let max = sim.throttle.max_seen();
            Reply::Graph(Ok(GraphReply::json(200, lock(&sim.stats).to_json(&max))))
        }
        (Method::GET, "/sim/requests") => {
            Reply::Graph(Ok(GraphReply::json(200, lock(&sim.stats).log_json())))
        }
        (Method::POST, "/sim/reset") => {
            sim.reset();
            Reply::Graph(Ok(GraphReply::json(200, json!({"reset": true}))))
        }
        (Method::GET, "/sim/config") => {
            Reply::Graph(Ok(GraphReply::json(200, lock(&sim.switches).to_json())))
        }
        (Method::POST, "/sim/config") => {
            let body = match Limited::new(request.into_body(), 1024 * 1024)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Reply::Graph(Err(GraphError::bad_request("Unreadable body."))),
            };
            let config: Value = match serde_json::from_slice(&body) {
                Ok(config) => config,
                Err(_) => return Reply::Graph(Err(super::translate::invalid_payload())),
            };
            let mut switches = lock(&sim.switches);
            Reply::Graph(match switches.apply(&config) {
                Ok(()) => Ok(GraphReply::json(200, switches.to_json())),
                Err(why) => Err(GraphError::bad_request(why)),
            })
        }
        (Method::GET, "/sim/token") => {
            Reply::Graph(mint_token(param("user"), param("app_only"), param("appid")))
        }
        (Method::PUT | Method::POST, "/sim/upload") => Reply::Graph(upload(sim, request).await),
        (Method::GET, "/sim/download") => download(sim, request, request_id),
        (Method::GET, "/sim/echo-links") => {
            let (parts, _body) = request.into_parts();
            record_arrival(sim, &parts, 0);
            Reply::Graph(Ok(echo_links()))
        }
        _ => Reply::Graph(Err(GraphError::new(
            404,
            "NotFound",
            format!("No simulator route '{path}'."),
        ))),
    }
}

fn mint_token(
    user: Option<String>,
    app_only: Option<String>,
    app_id: Option<String>,
) -> Result<GraphReply, GraphError> {
    let user = user.ok_or_else(|| GraphError::bad_request("The 'user' parameter is required."))?;
    let seed = SEED_USERS
        .iter()
        .find(|seed| {
            seed.upn.eq_ignore_ascii_case(&user) || seed.user_id.eq_ignore_ascii_case(&user)
        })
        .ok_or_else(|| {
            GraphError::new(404, "ErrorInvalidUser", format!("No seeded user '{user}'."))
        })?;
    let app_only = app_only.is_some_and(|flag| flag == "true" || flag == "1");
    let object_id = if app_only {
        APP_SERVICE_PRINCIPAL_ID
    } else {
        seed.user_id
    };
    let app_id = app_id.unwrap_or_else(|| DEFAULT_APP_ID.to_string());
    // A text body: the server sends it as is when a reply carries a JSON string.
    Ok(GraphReply::json(
        200,
        Value::String(token::mint(seed.tenant_id, object_id, &app_id, app_only)),
    ))
}

async fn upload(sim: &Simulator, request: Request<Incoming>) -> Result<GraphReply, GraphError> {
    let (parts, mut body) = request.into_parts();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            Err(_) => {
                record_arrival(sim, &parts, received);
                return Err(GraphError::bad_request("The upload was cut off."));
            }
        }
    }
    record_arrival(sim, &parts, received);
    Ok(GraphReply::json(200, json!({ "bytes": received })))
}

fn download(sim: &Simulator, request: Request<Incoming>, request_id: &str) -> Reply {
    let (parts, _body) = request.into_parts();
    record_arrival(sim, &parts, 0);
    let query = parts.uri.query().unwrap_or("");
    let Some(total) = super::query::Query::parse(query)
        .get("bytes")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return Reply::Graph(Err(GraphError::bad_request(
            "The 'bytes' parameter must be a number.",
        )));
    };
    let chunks = futures_util::stream::unfold(total, |left| async move {
        if left == 0 {
            return None;
        }
        let size = usize::try_from(left).map_or(DOWNLOAD_CHUNK, |left| left.min(DOWNLOAD_CHUNK));
        let data = Bytes::from_static(&DOWNLOAD_PATTERN[..size]);
        Some((
            Ok::<_, std::io::Error>(Frame::data(data)),
            left - size as u64,
        ))
    });
    let mut response = Response::new(StreamBody::new(chunks).boxed());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(total));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    Reply::Raw(response)
}

fn echo_links() -> GraphReply {
    GraphReply::json(
        200,
        json!({
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/me/messages?%24skip=10",
            "@odata.deltaLink": "https://graph.microsoft.com/v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=abc%3D%3D",
            "other": "https://outlook.office.com/api/v2.0/x",
        }),
    )
    .with_header("Location", "https://graph.microsoft.com/v1.0/me/messages/AAMkAGI2TAAA%3D")
    .with_header("Content-Location", "https://graph.microsoft.com/v1.0/me/messages?%24skip=10")
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn graph_response(
    reply: GraphReply,
    request_id: &str,
    client_request_id: Option<String>,
    accept_encoding: Option<String>,
) -> Response<Body> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    let mut content_type = GRAPH_CONTENT_TYPE;
    let mut payload = match &reply.body {
        None => Vec::new(),
        // Plain strings (minted tokens) go out as text, everything else as JSON.
        Some(Value::String(text)) => {
            content_type = "text/plain; charset=utf-8";
            text.clone().into_bytes()
        }
        Some(body) => serde_json::to_vec(body).unwrap_or_default(),
    };
    if reply.body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
        if let Some(encoding) = accept_encoding.as_deref().and_then(choose_encoding) {
            if let Ok(compressed) = compress(&payload, encoding) {
                payload = compressed;
                builder = builder
                    .header(http::header::CONTENT_ENCODING, encoding)
                    .header(http::header::VARY, "Accept-Encoding");
            }
        }
    }
    builder = builder.header("request-id", request_id).header(
        "client-request-id",
        client_request_id.unwrap_or_else(|| request_id.to_string()),
    );
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(name, value);
        }
    }
    builder.body(full(payload)).unwrap_or_else(|_| {
        // Only reachable with a header the checks above let through; answer plainly.
        let mut fallback = Response::new(full(Vec::new()));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// The first supported coding the client lists (q=0 means "not this one").
pub fn choose_encoding(accept_encoding: &str) -> Option<&'static str> {
    accept_encoding.split(',').find_map(|element| {
        let mut parts = element.split(';');
        let coding = parts.next()?.trim().to_ascii_lowercase();
        let refused = parts.any(|param| {
            param
                .trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            return None;
        }
        match coding.as_str() {
            "gzip" | "x-gzip" => Some("gzip"),
            "deflate" => Some("deflate"),
            "br" => Some("br"),
            _ => None,
        }
    })
}

pub fn compress(data: &[u8], encoding: &str) -> std::io::Result<Vec<u8>> {
    match encoding {
        "gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data)?;
            encoder.finish()
        }
        "deflate" => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data)?;
            encoder.finish()
        }
        _ => {
            let mut out = Vec::new();
            {
                let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                encoder.write_all(data)?;
                encoder.flush()?;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn first_listed_supported_encoding_wins() {
        assert_eq!(choose_encoding("br, gzip"), Some("br"));
        assert_eq!(
            choose_encoding("zstd, deflate;q=0.5, gzip"),
            Some("deflate")
        );
        assert_eq!(choose_encoding("gzip;q=0, identity"), None);
        assert_eq!(choose_encoding("identity"), None);
    }

    #[test]
    fn every_encoding_round_trips() {
        let data = br#"{"value":[1,2,3]}"#.repeat(50);
        let mut out = String::new();
        flate2::read::GzDecoder::new(compress(&data, "gzip").unwrap().as_slice())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), data.as_slice());
        out.clear();
        flate2::read::ZlibDecoder::new(compress(&data, "deflate").unwrap().as_slice())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), data.as_slice());
        out.clear();
        brotli::Decompressor::new(compress(&data, "br").unwrap().as_slice(), 4096)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), data.as_slice());
    }

    #[test]
    fn graph_response_carries_request_ids_and_retry_after() {
        let reply = GraphError::new(429, "TooManyRequests", "x")
            .with_retry_after("2")
            .into_reply("rid");
        let response = graph_response(reply, "rid", Some("mine".into()), None);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(response.headers()["request-id"], "rid");
        assert_eq!(response.headers()["client-request-id"], "mine");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }

    #[test]
    fn download_pattern_is_the_alphabet_repeated() {
        assert_eq!(&DOWNLOAD_PATTERN[..3], b"abc");
        assert_eq!(DOWNLOAD_PATTERN[26], b'a');
    }
}
