//! `demo`: the simulator and a proxy in front of it on free loopback ports, with curl
//! commands that show an ID surviving a move. For trying the proxy without a tenant.
//!
//! Product code never reaches into the simulator; this command only talks to it over HTTP,
//! as an app would.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use crate::admin::ShutdownTrigger;
use crate::app::{App, StartupError};
use crate::config::{self, Config, Origin, Overrides};
use crate::sim::{self, Simulator, SEED_USERS};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on a loopback port: {0}")]
    Bind(#[source] std::io::Error),
    #[error("configuration: {0}")]
    Config(config::ConfigErrors),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("the simulator did not answer as expected: {0}")]
    Simulator(String),
}

/// Runs until `shutdown` is triggered (Ctrl-C in `main`).
pub async fn run(
    env: impl IntoIterator<Item = (String, String)>,
    shutdown: ShutdownTrigger,
) -> Result<(), DemoError> {
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(DemoError::Bind)?;
    let sim_addr = sim_listener.local_addr().map_err(DemoError::Bind)?;
    let sim_url = format!("http://{sim_addr}");
    tokio::spawn(sim::serve(
        Simulator::new(),
        sim_listener,
        None,
        shutdown.triggered(),
    ));

    let overrides = Overrides {
        listen: Some("127.0.0.1:0".to_owned()),
        upstream: Some(sim_url.clone()),
    };
    // Built-in defaults plus IDPROXY__ variables, so `demo` works the same in any folder.
    let mut loaded = config::parse_str("", env, &overrides).map_err(DemoError::Config)?;
    demo_ports(&mut loaded.config);
    let mut app = App::build(loaded.config)?;
    let bound = app.bind().await?;
    let proxy_url = bound
        .proxy_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    let admin_url = bound
        .admin_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();

    let user = &SEED_USERS[0];
    let token = sim::token::mint(user.tenant_id, user.user_id, sim::DEFAULT_APP_ID, false);
    let (regular, immutable) = first_message_ids(&sim_url, user.upn, &token).await?;
    println!(
        "{}",
        instructions(&sim_url, &proxy_url, &admin_url, user.upn, &token, &regular, &immutable)
    );

    app.run(bound, shutdown, None).await;
    Ok(())
}

/// Both listeners on free loopback ports; the public URL follows the proxy's real port.
fn demo_ports(config: &mut Config) {
    config.admin.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    if let Ok(origin) = Origin::parse("http://127.0.0.1:0") {
        config.listen.public_base_url = origin;
    }
}

/// The first inbox message's regular ID (asked without the header, as an old app did) and
/// its immutable ID (asked with it).
async fn first_message_ids(
    sim_url: &str,
    upn: &str,
    token: &str,
) -> Result<(String, String), DemoError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut ids = Vec::new();
    for prefer in [None, Some("IdType=\"ImmutableId\"")] {
        let mut request = Request::get(format!(
            "{sim_url}/v1.0/users/{upn}/mailFolders/inbox/messages?$top=1"
        ))
        .header("authorization", format!("Bearer {token}"));
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        let request = request
            .body(Full::default())
            .map_err(|e| DemoError::Simulator(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| DemoError::Simulator(e.to_string()))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| DemoError::Simulator(e.to_string()))?
            .to_bytes();
        let page: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| DemoError::Simulator(e.to_string()))?;
        let id = page["value"][0]["id"]
            .as_str()
            .ok_or_else(|| DemoError::Simulator("no message in the inbox".to_owned()))?;
        ids.push(id.to_owned());
    }
    match <[String; 2]>::try_from(ids) {
        Ok([regular, immutable]) => Ok((regular, immutable)),
        Err(_) => Err(DemoError::Simulator("expected two answers".to_owned())),
    }
}

fn instructions(
    sim_url: &str,
    proxy_url: &str,
    admin_url: &str,
    upn: &str,
    token: &str,
    regular: &str,
    immutable: &str,
) -> String {
    let regular_path = regular.replace('=', "%3D");
    format!(
        r#"Graph simulator : {sim_url}
Proxy           : {proxy_url}   (admin: {admin_url}/metrics)

Paste these into another shell. The token is an unsigned test token for {upn}.

export TOKEN='{token}'
export P={proxy_url} S={sim_url} M=/v1.0/users/{upn}

# 1. Through the proxy, the message comes back with its immutable ID (AAkALg...):
curl -s -H "Authorization: Bearer $TOKEN" "$P$M/messages/{immutable}"

# 2. Move it to the archive through the proxy. Its regular ID changes; the immutable one does not:
curl -s -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
     -d '{{"destinationId":"archive"}}' "$P$M/messages/{immutable}/move"

# 3. Read it again by the same immutable ID: still 200, now in the archive folder:
curl -s -H "Authorization: Bearer $TOKEN" "$P$M/messages/{immutable}"

# 4. The regular ID an old app stored before the move now answers 404 from Graph:
curl -s -H "Authorization: Bearer $TOKEN" "$S$M/messages/{regular_path}"

# 5. What the proxy sent: every request carried Prefer: IdType="ImmutableId":
curl -s $S/sim/stats

Ctrl-C stops both."#
    )
}

/// Serves the simulator alone (`immutable-id-proxy sim`), printing its address.
pub async fn run_simulator(
    listener: TcpListener,
    shutdown: ShutdownTrigger,
) -> std::io::Result<()> {
    let sim = Simulator::new();
    sim::serve(Arc::clone(&sim), listener, None, shutdown.triggered()).await
}
