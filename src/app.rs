//! Wiring: a validated `Config` becomes one `App` (upstream client, metrics, TLS identity),
//! which then serves already-bound listeners until shutdown.
//!
//! Everything that can fail because of a file or a setting fails in `App::build`, before any
//! port is bound, so a bad config never leaves a half-started proxy behind.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::admin::{Admin, ShutdownTrigger};
use crate::config::{Backend, Config};
use crate::forward_proxy::{ForwardProxy, LeafMint, MintError};
use crate::id_store::IdStore;
use crate::metrics::Metrics;
use crate::pipeline::{Proxy, Route};
use crate::server::{self, ServeOptions};
use crate::shared::{Redis, SharedIds, SharedLimits};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting that passed validation but could not be put to use (a PEM file with no key).
    #[error("{key}: {source}")]
    Setting {
        key: &'static str,
        #[source]
        source: tls::TlsError,
    },
    /// The ID store could not be opened (its message names `rewrite.store`).
    #[error(transparent)]
    Store(#[from] crate::id_store::StoreError),
    /// The interception CA could not be used (its message names the key).
    #[error(transparent)]
    ForwardProxy(#[from] MintError),
    /// `shared.redis_url` cannot be used (its message names the key).
    #[error(transparent)]
    Shared(#[from] crate::shared::UrlError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct App {
    config: Config,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    /// Opened only when `rewrite.enabled`.
    ids: Option<Arc<IdStore>>,
    /// Loaded only when `forward_proxy.enabled`.
    mint: Option<Arc<LeafMint>>,
    /// `shared.backend = "redis"`: connected in `run`, before serving.
    redis: Option<Redis>,
}

/// Listeners bound before serving, so callers (and tests on port 0) know the addresses.
pub struct Bound {
    pub proxy: TcpListener,
    pub admin: TcpListener,
    /// Bound only when `forward_proxy.enabled`.
    pub forward: Option<TcpListener>,
    /// Started with the listeners, so the proxy is whole once it says where it listens.
    pub workers: server::Workers,
}

impl Bound {
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.local_addr().ok()
    }
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
    pub fn forward_addr(&self) -> Option<SocketAddr> {
        self.forward.as_ref()?.local_addr().ok()
    }
}

impl App {
    pub fn build(config: Config) -> Result<App, StartupError> {
        let metrics = Arc::new(Metrics::new());
        let ids = if config.rewrite.enabled {
            Some(Arc::new(IdStore::open(&config.rewrite, metrics.clone())?))
        } else {
            None
        };
        let redis = match config.shared.backend {
            Backend::Redis => Some(Redis::new(&config.shared.redis_url, metrics.clone())?),
            Backend::Memory => None,
        };
        let mut proxy = Proxy::new(&config, metrics.clone(), ids.clone()).map_err(|source| {
            StartupError::Setting {
                key: "upstream.ca_file",
                source,
            }
        })?;
        if let Some(redis) = &redis {
            proxy.share(redis, &config);
        }
        let tls = match &config.listen.tls {
            Some(files) => Some(TlsAcceptor::from(
                tls::server_config(&files.cert, &files.key).map_err(|source| {
                    StartupError::Setting {
                        key: "listen.tls_cert",
                        source,
                    }
                })?,
            )),
            None => None,
        };
        let mint = if config.forward_proxy.enabled {
            let fp = &config.forward_proxy;
            Some(Arc::new(LeafMint::load(&fp.ca_cert, &fp.ca_key)?))
        } else {
            None
        };
        Ok(App {
            config,
            proxy: Arc::new(proxy),
            tls,
            metrics,
            ids,
            mint,
            redis,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub async fn bind(&mut self) -> Result<Bound, StartupError> {
        let bind = |key, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { key, addr, source })
        };
        let bound = Bound {
            proxy: bind("listen.addr", self.config.listen.addr).await?,
            admin: bind("admin.addr", self.config.admin.addr).await?,
            forward: match self.mint {
                Some(_) => Some(bind("forward_proxy.addr", self.config.forward_proxy.addr).await?),
                None => None,
            },
            workers: server::Workers::start().await,
        };
        // `listen.addr` on port 0 (tests, `demo`): a public URL derived from it would say
        // port 0, so it takes the port the kernel chose.
        let public = &self.config.listen.public_base_url;
        if public.authority.port_u16() == Some(0) {
            if let Some(port) = bound.proxy_addr().map(|a| a.port()) {
                let host = public.authority.host();
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                };
                if let Ok(authority) = format!("{host}:{port}").parse() {
                    self.config.listen.public_base_url.authority = authority;
                    if let Some(proxy) = Arc::get_mut(&mut self.proxy) {
                        proxy.set_public_base_url(
                            &self.config.upstream.url,
                            &self.config.listen.public_base_url,
                        );
                    }
                }
            }
        }
        Ok(bound)
    }

    /// Serves until `shutdown` is triggered (signal or `POST /shutdown`), then drains.
    /// `reload` re-reads the configuration on SIGHUP; only `[rate_limit]` is applied live.
    pub async fn run(self, bound: Bound, shutdown: ShutdownTrigger, reload: Option<Reload>) {
        for feature in inactive_features(&self.config) {
            warn!("{feature}");
        }
        if let Some(redis) = &self.redis {
            // Before serving, so the first requests already share state.
            redis.start().await;
        }
        let renewal = self.proxy.shared_limits().map(|s| s.spawn_renewal());
        let eviction = self.proxy.limits().spawn_eviction(EVICT_EVERY);
        let shared_limits = self.proxy.shared_limits().cloned();
        let reloader = reload.map(|reload| {
            tokio::spawn(reload_on_sighup(
                self.proxy.limits().clone(),
                shared_limits,
                reload,
            ))
        });
        let mut admin = Admin::new(self.metrics.clone(), shutdown.clone(), self.ids.clone());
        admin.ca_pem = self.mint.as_ref().map(|mint| mint.ca_pem());
        if self.ids.is_some() {
            admin.shared_ids = self.redis.clone().map(SharedIds::new);
        }
        let admin = Arc::new(admin);
        let admin_stop = ShutdownTrigger::new();
        let admin_task = {
            let admin = admin.clone();
            let stop = admin_stop.triggered();
            tokio::spawn(server::serve(
                bound.admin,
                None,
                move |req, _peer| admin.clone().handle(req),
                ServeOptions::default(),
                stop,
            ))
        };

        let options = ServeOptions {
            header_read_timeout: self.config.listen.header_read_timeout,
            max_connections: self.config.listen.max_connections.get(),
            open_connections: Some(self.metrics.client_connections.clone()),
            ..ServeOptions::default()
        };
        let proxy = self.proxy.clone();
        let draining = {
            let admin = admin.clone();
            let triggered = shutdown.triggered();
            async move {
                triggered.await;
                // Readiness drops before the listener closes, so a load balancer stops
                // sending while in-flight requests finish.
                admin.ready.store(false, Ordering::Release);
                info!("shutting down: no new connections, draining in-flight requests");
            }
        };
        // The forward listener stops accepting with the main one and drains alongside it.
        let forward_task = match (bound.forward, &self.mint) {
            (Some(listener), Some(mint)) => {
                let forward = Arc::new(ForwardProxy::new(
                    &self.config,
                    self.proxy.clone(),
                    mint.clone(),
                ));
                Some(tokio::spawn(forward.serve(
                    listener,
                    options.clone(),
                    shutdown.triggered(),
                )))
            }
            _ => None,
        };
        admin.ready.store(true, Ordering::Release);
        info!("ready");
        server::serve_workers(
            bound.workers,
            bound.proxy,
            self.tls.clone(),
            move |req, _peer| proxy.clone().handle(req, Route::Reverse),
            options,
            draining,
        )
        .await;
        if let Some(forward) = forward_task {
            let _ = forward.await;
        }
        admin_stop.trigger();
        let _ = admin_task.await;
        eviction.abort();
        if let Some(renewal) = renewal {
            renewal.abort();
        }
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        info!("stopped");
    }
}

/// Idle limiter keys (tenants, mailboxes, ended penalties) are dropped this often, so
/// memory stays bounded whatever keys appear.
const EVICT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Re-reads the configuration (file, environment, flags) for a SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

async fn reload_on_sighup(
    limits: Arc<crate::admit::Limits>,
    shared_limits: Option<Arc<SharedLimits>>,
    reload: Reload,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; [rate_limit] cannot be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match reload() {
            Ok(config) => {
                limits.reload(&config.rate_limit);
                if let Some(shared) = &shared_limits {
                    shared.reload(&config.rate_limit);
                }
                info!("SIGHUP: [rate_limit] reloaded (other sections apply at the next start)");
            }
            Err(problems) => {
                tracing::error!("SIGHUP: configuration refused, the old limits stay: {problems}");
            }
        }
    }
}

/// Sections that are configured on but not built yet: parsed and validated, never silently
/// ignored.
pub fn inactive_features(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.upstream.proxy.is_some() {
        out.push(
            "upstream.proxy: not active yet in this build (Graph is reached directly)".to_owned(),
        );
    }
    out
}
