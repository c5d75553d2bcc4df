//! Builds the Pingora server with peergate's listeners and runs it, in the foreground for
//! `peergate run`, or on a thread of its own for tests and the demo.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::Notify;

use crate::admin::AdminListener;
use crate::config::Loaded;
use crate::inbound::{AppTimeouts, Inbound};
use crate::metrics::Direction;
use crate::outbound::{Outbound, PeerTimeouts};
use crate::reload::Reloader;
use crate::state::Shared;

/// The inbound listener: peers reach the app through it.
fn add_inbound(
    server: &mut Server,
    conf: &Arc<ServerConf>,
    loaded: &Loaded,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let config = &loaded.config;
    let timeouts = AppTimeouts {
        connect: config.app.connect_timeout.0,
        response: config.app.timeout.0,
    };
    let idle = config.listen.idle_timeout.whole_seconds();
    let inbound = Inbound::new(
        shared.clone(),
        timeouts,
        config.inbound_tls().is_some(),
        idle,
        config.listen.max_connections,
    );
    let mut proxy = pingora::proxy::http_proxy(conf, inbound);
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(crate::client_idle::h2_backstop(
        config.listen.idle_timeout.0,
    ));
    // Pingora answers CONNECT with a bare 405 unless asked not to; `Inbound::request_filter`
    // refuses it itself with a problem document (`connect_not_supported`). Nothing is tunnelled.
    options.allow_connect_method_proxying = true;
    proxy.server_options = Some(options);
    // Watched inside the head clock: the first head's first bytes are awaited under it.
    let proxy = crate::unreadable_head::Watch::new(proxy, Direction::Inbound, shared.clone());
    let proxy = crate::client_idle::Guarded::new(proxy, config.listen.idle_timeout.0);
    let addr = config.listen.inbound.to_string();
    match config.inbound_tls() {
        Some(_) => {
            // Loaded and checked with the configuration; Pingora would read the files only
            // on its listener thread, and panic there (see `tls_cert`). A reload replaces it.
            let slot = shared
                .server_cert
                .clone()
                .ok_or("tls: the certificate was not loaded with the configuration")?;
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
                .map_err(|e| format!("tls: {e}"))?;
            settings.set_cert_resolver(slot);
            settings.enable_h2();
            // The handshake runs inside the connection ceiling, timed (see `tls_accept`);
            // Pingora's listener is plain TCP.
            let proxy = crate::tls_accept::Handshake::new(
                proxy,
                settings.build(),
                config.listen.idle_timeout.0,
            );
            add_proxy_service(server, Direction::Inbound, proxy, &addr, config, shared);
        }
        None => add_proxy_service(server, Direction::Inbound, proxy, &addr, config, shared),
    }
    Ok(())
}

/// The outbound listener: the app reaches its peers through it.
fn add_outbound(
    server: &mut Server,
    conf: &Arc<ServerConf>,
    loaded: &Loaded,
    shared: &Arc<Shared>,
) {
    let config = &loaded.config;
    let timeouts = PeerTimeouts {
        connect: config.outbound.connect_timeout.0,
        response: config.outbound.timeout.0,
    };
    let ca_file = config
        .peer_ca_file()
        .map(|f| f.to_string_lossy().into_owned());
    let idle = config.listen.idle_timeout.whole_seconds();
    let loopback_only = !config.outbound.allow_remote_clients;
    let outbound = Outbound::new(
        shared.clone(),
        timeouts,
        ca_file,
        idle,
        loopback_only,
        config.listen.outbound.0,
        config.listen.max_connections,
    );
    // Pingora answers CONNECT with a bare 405 unless asked not to; peergate refuses it itself,
    // with a problem document that tells the app to use plain http:// URLs. Nothing is tunnelled.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.allow_connect_method_proxying = true;
    let mut proxy = pingora::proxy::http_proxy(conf, outbound);
    proxy.server_options = Some(options);
    // Watched inside the head clock: the first head's first bytes are awaited under it.
    let proxy = crate::unreadable_head::Watch::new(proxy, Direction::Outbound, shared.clone());
    let proxy = crate::client_idle::Guarded::new(proxy, config.listen.idle_timeout.0);
    let addr = config.listen.outbound.to_string();
    add_proxy_service(server, Direction::Outbound, proxy, &addr, config, shared);
}

/// Serves `proxy` on `addr` (plain TCP to Pingora) as the `direction` listener, under
/// `listen.max_connections`: [`crate::connection_cap::Capped`] holds a place for each
/// connection from its acceptance (its TLS handshake included), and the connection filter
/// closes new ones at the ceiling before anything is spent on them.
fn add_proxy_service<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    direction: Direction,
    proxy: A,
    addr: &str,
    config: &crate::config::Config,
    shared: &Arc<Shared>,
) {
    let cap =
        crate::connection_cap::Cap::new(direction, config.listen.max_connections, shared.clone());
    let at_capacity = Arc::new(crate::connection_cap::AtCapacity(cap.clone()));
    let proxy = crate::connection_cap::Capped::new(proxy, cap);
    let name = format!("peergate {}", direction.as_str());
    let mut service = crate::lifecycle::tracked_service(&name, proxy, shared);
    service.set_connection_filter(at_capacity);
    service.threads = Some(config.listen.threads.count());
    service.add_listener(listener(addr));
    server.add_service(service);
}

/// What a client connection's reads go through before TLS or the HTTP parser. Pingora's
/// default is a 64 KiB buffer, allocated zeroed for every connection accepted; it was most of
/// what a kept client connection cost (benches/HISTORY.md, change 31). rustls reads 4 KiB at a
/// time and Pingora reads bodies into buffers of its own, so 16 KiB (about one full-size TLS
/// record) keeps large uploads at about one read call per record.
const CLIENT_READ_BUFFER: usize = 16 * 1024;

fn listener(addr: &str) -> pingora::listeners::ListenerConfig {
    pingora::listeners::ListenerConfig::tcp(addr)
        .l4_buffer(pingora::listeners::L4BufferSettings::default().read(CLIENT_READ_BUFFER))
}

/// Starts the hot reloader of this gateway (file changes, SIGHUP, a periodic check), and
/// records the configuration just loaded as the last successful load.
fn start_reloader(
    loaded: &Loaded,
    shared: &Arc<Shared>,
    reads: &[crate::files::FileRead],
) -> Result<Reloader, String> {
    crate::reload::mark_loaded(shared);
    Reloader::start(shared.clone(), loaded, reads)
}

/// Whether `addr` can be listened on now. Pingora binds its listeners on their own threads
/// and, when an address is in use, tries again every second, thirty times (it waits for an old
/// process handing over its sockets), and then gives that listener up: the process would run
/// without it. So the address is bound once here, and released, before anything starts.
/// (Listeners that overlap each other are refused with the configuration.)
fn free_to_listen(setting: &str, addr: std::net::SocketAddr) -> Result<(), String> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| cannot_listen(setting, addr, &e))
}

/// Why `setting`'s address cannot be listened on, and what to do about the two common causes.
pub fn cannot_listen(setting: &str, addr: std::net::SocketAddr, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another process listens there (another peergate, or `peergate demo`?): stop it, \
             or set {setting} to a free address"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "; ports below 1024 need privileges: pick a higher port for {setting}, or give the \
             process CAP_NET_BIND_SERVICE"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("; no interface of this machine has that address: check {setting}")
        }
        _ => String::new(),
    };
    format!("{setting}: cannot listen on {addr}: {e}{hint}")
}

/// A server assembled from a configuration, not yet running.
pub struct Gateway {
    server: Server,
    shared: Arc<Shared>,
    /// Lives as long as the gateway runs: dropping it stops the reloader.
    reloader: Option<Reloader>,
    /// Outside Pingora, so that it answers through a graceful shutdown (see `admin`).
    admin: Option<AdminListener>,
}

impl Gateway {
    pub fn build(loaded: &Loaded) -> Result<Gateway, String> {
        // The profile page is read here, after the load.
        let recording = crate::files::Recording::begin();
        let shared = Arc::new(Shared::new(&loaded.config)?);
        let mut reads = loaded.reads.clone();
        reads.extend(recording.finish());
        crate::reload::remember_text(&shared, &loaded.text);

        // On SIGTERM Pingora closes the listeners, sleeps the grace period (the time requests
        // in flight get; `peergate run` exits early once they are done, see
        // `lifecycle::exit_when_drained`), then cancels what is left, giving the runtimes the
        // timeout to stop. Pingora counts whole seconds.
        let shutdown = &loaded.config.shutdown;
        // Each service sets its own thread count (`listen.threads`); this is Pingora's
        // default for anything that does not.
        let conf = ServerConf {
            threads: 1,
            grace_period_seconds: Some(shutdown.grace_period.whole_seconds()),
            graceful_shutdown_timeout_seconds: Some(shutdown.timeout.whole_seconds()),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let conf = server.configuration.clone();

        let listen = &loaded.config.listen;
        free_to_listen("listen.inbound", listen.inbound.0)?;
        free_to_listen("listen.outbound", listen.outbound.0)?;
        add_inbound(&mut server, &conf, loaded, &shared)?;
        add_outbound(&mut server, &conf, loaded, &shared);
        let admin = AdminListener::start(loaded.config.listen.admin.0, shared.clone())?;
        let reloader = start_reloader(loaded, &shared, &reads)?;

        Ok(Gateway {
            server,
            shared,
            reloader: Some(reloader),
            admin: Some(admin),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs until SIGTERM or SIGQUIT (graceful) or SIGINT (at once); never returns.
    pub fn run_forever(self) -> ! {
        crate::lifecycle::exit_when_drained(
            self.server.watch_execution_phase(),
            self.shared.clone(),
        );
        let _reloader = self.reloader;
        let _admin = self.admin;
        self.server.run(RunArgs {
            shutdown_signal: Box::new(ProcessSignals),
        });
        std::process::exit(0)
    }

    /// Runs on a thread of its own until [`Running::stop`].
    pub fn spawn(self) -> Running {
        let signal = Arc::new(Stop {
            notify: Notify::new(),
            graceful: AtomicBool::new(false),
        });
        let watch = StopWatch(signal.clone());
        let server = self.server;
        let thread = std::thread::Builder::new()
            .name("peergate-server".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(watch),
                });
            })
            .ok();
        Running {
            shared: self.shared,
            stop: signal,
            thread,
            _reloader: self.reloader,
            _admin: self.admin,
        }
    }
}

/// The signals that stop `peergate run`. Pingora's own watch reads SIGQUIT as a graceful
/// upgrade: it hands the listening sockets to whatever listens on its upgrade socket,
/// `/tmp/pingora_upgrade.sock` by default, a path any local user can create, who would then
/// accept the peers' and the app's connections. peergate has no upgrade to hand over to, so
/// SIGQUIT stops it gracefully, as SIGTERM does (and as it stops nginx); SIGINT (Ctrl-C) stops
/// it at once, as with Pingora's.
struct ProcessSignals;

#[async_trait]
impl ShutdownSignalWatch for ProcessSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        // A signal that cannot be watched keeps its default action, which ends the process.
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(watched) => Some(watched),
            Err(e) => {
                log::error!("cannot watch {name} ({e}); it will stop peergate at once");
                None
            }
        };
        async fn next(watched: &mut Option<Signal>) {
            match watched {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let mut term = watch(SignalKind::terminate(), "SIGTERM");
        let mut quit = watch(SignalKind::quit(), "SIGQUIT");
        let mut interrupt = watch(SignalKind::interrupt(), "SIGINT");
        if crate::early_signals::terminate_came() {
            log::info!("a SIGTERM or SIGQUIT came while starting: stopping gracefully");
            interrupt_ends_the_drain(interrupt);
            return ShutdownSignal::GracefulTerminate;
        }
        tokio::select! {
            () = next(&mut term) => {}
            () = next(&mut quit) => {
                log::info!("SIGQUIT: stopping gracefully, as for SIGTERM");
            }
            () = next(&mut interrupt) => return ShutdownSignal::FastShutdown,
        }
        interrupt_ends_the_drain(interrupt);
        ShutdownSignal::GracefulTerminate
    }
}

/// Ctrl-C stops at once during a graceful drain too. Pingora asks for a signal only once, and
/// a signal tokio has watched keeps tokio's handler, so without this watch a SIGINT in the drain
/// would go unseen and the drain would run its whole course. The watch moves to a thread of its
/// own, where it is read as long as the process lives.
fn interrupt_ends_the_drain(interrupt: Option<tokio::signal::unix::Signal>) {
    let Some(mut interrupt) = interrupt else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("peergate-interrupt".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return unwatched(&e),
            };
            runtime.block_on(async {
                if interrupt.recv().await.is_some() {
                    log::warn!(
                        "SIGINT during the graceful shutdown: stopping at once, cutting the requests still in flight"
                    );
                    std::process::exit(0);
                }
            });
        });
    if let Err(e) = spawned {
        unwatched(&e);
    }
}

fn unwatched(e: &std::io::Error) {
    log::warn!("cannot watch SIGINT during the shutdown ({e}); it will wait for the drain");
}

struct Stop {
    notify: Notify,
    graceful: AtomicBool,
}

struct StopWatch(Arc<Stop>);

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notify.notified().await;
        if self.0.graceful.load(Ordering::SeqCst) {
            ShutdownSignal::GracefulTerminate
        } else {
            ShutdownSignal::FastShutdown
        }
    }
}

/// A gateway running on its own thread.
pub struct Running {
    shared: Arc<Shared>,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    /// Dropped with the gateway (after the server thread has ended), which stops it.
    _reloader: Option<Reloader>,
    /// Likewise.
    _admin: Option<AdminListener>,
}

impl Running {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight requests finish (graceful) or not, and waits.
    pub fn stop(mut self, graceful: bool) {
        self.stop.graceful.store(graceful, Ordering::SeqCst);
        self.stop.notify.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.notify.notify_one();
            let _ = thread.join();
        }
    }
}
