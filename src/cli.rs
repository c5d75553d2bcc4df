//! The command line: `run`, `keygen`, `id`, `check`, `peer add | list | remove` (and the verbs
//! later issues add).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Access};
use crate::identity::{self, PublicIdentity};

#[derive(Parser, Debug)]
#[command(
    name = "peergate",
    version,
    about = "Give any HTTP app a peer-to-peer identity: sign its requests to peers, verify theirs, tell it who is calling.",
    long_about = "peergate sits in front of an unmodified HTTP app. It signs the app's outbound requests to \
peers (RFC 9421 HTTP Message Signatures, Ed25519), verifies inbound requests against a YAML allowlist \
of peers, and passes the verified peer's identity to the app in headers. The app never touches a key.\n\n\
Without a verb, peergate runs with the configuration given by -c (default ./peergate.yaml).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (inbound, outbound and admin listeners).
    Run(RunArgs),
    /// Generate a new Ed25519 identity key (PKCS#8 PEM, mode 0600).
    Keygen {
        /// Where to write the key.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Replace an existing file (its identity is lost for good).
        #[arg(long)]
        force: bool,
    },
    /// Print this identity: short ID, peer ID, key id, and the public key in the forms peers paste
    /// into their allowlist.
    Id {
        /// Read the key named by this configuration (./peergate.yaml when neither -c nor -k is
        /// given); the allowlist entry printed then carries the configured name and URL.
        #[arg(short, long, value_name = "FILE", conflicts_with = "key")]
        config: Option<PathBuf>,
        /// Read this key file directly; the allowlist entry printed is then a template, with
        /// placeholders for the name and URL.
        #[arg(short, long, value_name = "KEYFILE")]
        key: Option<PathBuf>,
    },
    /// Validate a configuration and print a one-screen summary.
    Check {
        #[arg(short, long, value_name = "FILE", default_value = "peergate.yaml")]
        config: PathBuf,
    },
    /// Manage the allowlist: add a peer from its URL, list peers, remove one.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Two identities (alice, bob) and two sample apps on loopback: a signed call from
    /// alice's app to bob's app, printed, then left running to try by hand (Ctrl-C stops it).
    Demo {
        /// Run the signed exchange, print it and exit, instead of staying up.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Fetch a peer's identity from URL/.well-known/peergate (over verified TLS), show its
    /// short ID and key id to compare out of band, and on confirmation add it to the allowlist.
    Add {
        /// The peer's URL, e.g. https://bob.example.org:8443
        url: String,
        /// The name to list the peer under (default: the name it gives itself).
        #[arg(long)]
        name: Option<String>,
        /// Do not ask; for scripts, once the key id has been compared another way.
        #[arg(short, long)]
        yes: bool,
        /// The configuration whose allowlist to use.
        #[arg(short, long, value_name = "FILE", default_value = "peergate.yaml")]
        config: PathBuf,
        /// Trust this CA (PEM) for the peer's certificate instead of the configuration's
        /// tls.peer_ca_file or the system roots.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
    },
    /// List the peers on the allowlist: short ID, name, URL, key id.
    List {
        /// The configuration whose allowlist to use.
        #[arg(short, long, value_name = "FILE", default_value = "peergate.yaml")]
        config: PathBuf,
    },
    /// Remove a peer, named by short ID or name, from the allowlist.
    Remove {
        /// The peer's short ID or name.
        peer: String,
        /// The configuration whose allowlist to use.
        #[arg(short, long, value_name = "FILE", default_value = "peergate.yaml")]
        config: PathBuf,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "peergate.yaml")]
    pub config: PathBuf,
}

/// A failure of a command, with the exit code it maps to (2 for bad input, 1 otherwise).
#[derive(Debug)]
pub enum CliError {
    Config(config::ConfigError),
    Identity(identity::IdentityError),
    Usage(String),
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            // A key file that is not a key, is missing, is not a file (a directory, a device,
            // a pipe) or is far too large, or a keygen target that exists: the argument is
            // wrong, as with a key named in a configuration (which is a Config error). A key
            // that cannot be read for another reason (permissions, I/O) is a failure.
            CliError::Identity(identity::IdentityError::Io { source, .. })
                if !matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::FileTooLarge
                        | std::io::ErrorKind::IsADirectory
                ) =>
            {
                1
            }
            CliError::Identity(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Config(e) => e.fmt(f),
            CliError::Identity(e) => e.fmt(f),
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError::Config(e)
    }
}

impl From<identity::IdentityError> for CliError {
    fn from(e: identity::IdentityError) -> Self {
        CliError::Identity(e)
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    dispatch(cli).map_err(hint_missing_config)
}

/// A configuration file that is not there (`peergate` typed in a directory without
/// `peergate.yaml`) gets a pointer to the way out, not only the system's words.
fn hint_missing_config(e: CliError) -> CliError {
    match e {
        CliError::Config(mut c)
            if c.position.is_none()
                && c.message.starts_with("cannot read: ")
                && !c.file.exists() =>
        {
            c.message.push_str(
                "; name the configuration with -c FILE (peergate --help lists the commands), \
                 or try peergate demo",
            );
            CliError::Config(c)
        }
        other => other,
    }
}

fn dispatch(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        None => run_gateway(&cli.run.config),
        Some(Command::Run(args)) => run_gateway(&args.config),
        Some(Command::Keygen { output, force }) => keygen(&output, force),
        Some(Command::Id { config, key }) => id(config.as_deref(), key.as_deref()),
        Some(Command::Check { config }) => check(&config),
        Some(Command::Demo { once }) => crate::demo::run(once).map_err(CliError::Failed),
        Some(Command::Peer(peer)) => match peer {
            PeerCommand::Add {
                url,
                name,
                yes,
                config,
                ca_file,
            } => crate::peer_cmd::add(&crate::peer_cmd::AddArgs {
                url,
                name,
                yes,
                config,
                ca_file,
            }),
            PeerCommand::List { config } => crate::peer_cmd::list(&config),
            PeerCommand::Remove { peer, config, yes } => {
                crate::peer_cmd::remove(&config, &peer, yes)
            }
        },
    }
}

fn run_gateway(config_path: &Path) -> Result<(), CliError> {
    crate::early_signals::hold();
    let loaded = config::load_serving(config_path, None)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    // Before the gateway is built: its connection pools size themselves by the limit.
    if let Some((before, after)) = crate::fd_limit::raise() {
        log::info!("open files limit raised from {before} to {after}");
    }
    let gateway = crate::server::Gateway::build(&loaded).map_err(CliError::Failed)?;
    let c = &loaded.config;
    log::info!(
        "peergate {} as {} ({}): inbound {}, outbound {}, admin {}, app {}, {}, {} threads per proxy listener",
        env!("CARGO_PKG_VERSION"),
        c.identity.key_file.identity.public().short_id(),
        c.identity.display_name(),
        c.listen.inbound,
        c.listen.outbound,
        c.listen.admin,
        c.app.upstream,
        crate::allowlist::peers_counted(c.peer_count()),
        c.listen.threads.count()
    );
    // The gateway runs on its snapshot of the configuration (which shares the peer table
    // with `loaded`); `run_forever` never returns, so what the load freed is handed back now.
    drop(loaded);
    crate::memory::release_freed();
    gateway.run_forever()
}

fn load_config(path: &Path) -> Result<config::Loaded, CliError> {
    let loaded = config::load(path)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded)
}

fn keygen(output: &Path, force: bool) -> Result<(), CliError> {
    let identity = identity::write_new_key(output, force)?;
    let public = identity.public();
    println!("wrote {} (mode 0600)", output.display());
    println!("short ID  {}", public.short_id());
    println!("key id    {}", public.key_id());
    println!(
        "\nShow it to peers with: peergate id -k {}",
        output.display()
    );
    Ok(())
}

fn id(config_path: Option<&Path>, key_path: Option<&Path>) -> Result<(), CliError> {
    let (public, name, url) = match (config_path, key_path) {
        (_, Some(key)) => {
            let loaded = identity::load_key(key)?;
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            (loaded.identity.public().clone(), None, None)
        }
        (config_path, None) => {
            let path = config_path.unwrap_or(Path::new("peergate.yaml"));
            let loaded = load_config(path)?;
            let identity = &loaded.config.identity;
            // The URL the identity document advertises, so that both say the same.
            let url = crate::public_identity::public_url(&loaded.config);
            (
                identity.key_file.identity.public().clone(),
                Some(identity.display_name()),
                url,
            )
        }
    };
    print!(
        "{}",
        describe_identity(&public, name.as_deref(), url.as_deref())
    );
    Ok(())
}

/// What `peergate id` prints: the handles, the key in every accepted form, and an allowlist entry.
pub fn describe_identity(public: &PublicIdentity, name: Option<&str>, url: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(name) = name {
        out.push_str(&format!("name        {name}\n"));
    }
    out.push_str(&format!("short ID    {}\n", public.short_id()));
    out.push_str(&format!("peer ID     {}\n", public.peer_id()));
    out.push_str(&format!("key id      {}\n", public.key_id()));
    out.push_str(&format!(
        "public key  {}   (SPKI base64)\n",
        public.spki_base64()
    ));
    out.push_str(&format!(
        "            {}   (raw, base64url)\n\n",
        public.raw_base64url()
    ));
    out.push_str(&public.public_key_pem());
    out.push_str("\nFor a peer's allowlist (peers.yaml):\n\n");
    out.push_str(&format!(
        "  - name: {}\n    public_key: \"{}\"\n    url: {}\n",
        yaml_string(name.unwrap_or("<your name>")),
        public.spki_base64(),
        url.unwrap_or("https://<your host>:8443")
    ));
    out
}

fn yaml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn check(config_path: &Path) -> Result<(), CliError> {
    let loaded = load_config(config_path)?;
    print!("{}", summary(&loaded));
    Ok(())
}

/// The one-screen summary `peergate check` prints.
pub fn summary(loaded: &config::Loaded) -> String {
    let c = &loaded.config;
    let me = c.identity.key_file.identity.public();
    let hosts: Vec<String> = c.identity.hosts.0.iter().map(ToString::to_string).collect();
    let mut out = format!("{}: OK\n\n", loaded.path.display());
    out.push_str("identity\n");
    out.push_str(&format!("  name       {}\n", c.identity.display_name()));
    out.push_str(&format!("  short ID   {}\n", me.short_id()));
    out.push_str(&format!("  key id     {}\n", me.key_id()));
    out.push_str(&format!(
        "  key file   {}\n",
        c.identity.key_file.path.display()
    ));
    out.push_str(&format!(
        "  hosts      {} ({})\n",
        hosts.join(", "),
        c.identity.scheme.as_str()
    ));
    if let Some(profile) = &c.identity.profile {
        out.push_str(&format!("  profile    {}\n", profile.0.display()));
    }
    out.push_str(&format!(
        "  public     {} {} {} (unsigned)\n",
        crate::public_identity::IDENTITY_PATH,
        crate::public_identity::DIRECTORY_PATH,
        c.identity.profile_path.as_str()
    ));
    out.push_str("\nlisteners\n");
    let tls = if c.inbound_tls().is_some() {
        "TLS"
    } else {
        "plain HTTP"
    };
    out.push_str(&format!(
        "  inbound    {} ({tls}) -> app {}\n",
        c.listen.inbound, c.app.upstream
    ));
    out.push_str(&format!(
        "  outbound   {} (for the app; signs requests to peers)\n",
        c.listen.outbound
    ));
    out.push_str(&format!(
        "  admin      {} (/metrics /healthz /readyz)\n",
        c.listen.admin
    ));
    let threads = c.listen.threads.count();
    let auto = if c.listen.threads == config::Threads::Auto {
        " (auto: the CPUs this process may use)"
    } else {
        ""
    };
    out.push_str(&format!(
        "  threads    {threads} for inbound, {threads} for outbound{auto}\n"
    ));
    out.push_str(&format!(
        "  clients    at most {} connections on each of inbound and outbound\n",
        c.listen.max_connections
    ));
    let s = &c.signatures;
    out.push_str(&format!(
        "\nsignatures  lifetime {}, max_age {}, clock_skew {}, nonce {}, max_body {}, max_buffered {}, replay cache {} entries\n",
        s.lifetime,
        s.max_age,
        s.clock_skew,
        if s.require_nonce { "required" } else { "optional" },
        s.max_body,
        s.max_buffered,
        s.replay_cache_size
    ));
    let h = &c.identity_headers;
    out.push_str(&format!(
        "identity headers  {}, {}, {}\n",
        h.id.0, h.name.0, h.key_id.0
    ));
    out.push_str("\nroutes (first match wins; no match = peers)\n");
    for route in &c.routes {
        let access = match route.access {
            Access::Public => "public (no signature)",
            Access::Peers => "peers (verified signature)",
        };
        out.push_str(&format!("  {:<24} {access}\n", route.path.as_str()));
    }
    let source = c
        .peers_file
        .as_ref()
        .map(|f| format!(" (peers_file {})", f.0.display()))
        .unwrap_or_default();
    out.push_str(&format!("\npeers: {}{source}\n", c.peers.0.len()));
    for peer in &c.peers.0 {
        let url = peer
            .url
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "-".into());
        let mut limits = Vec::new();
        if !peer.allow.methods.is_empty() {
            let m: Vec<&str> = peer.allow.methods.iter().map(|m| m.0.as_str()).collect();
            limits.push(m.join(","));
        }
        if !peer.allow.paths.is_empty() {
            let p: Vec<&str> = peer.allow.paths.iter().map(|p| p.as_str()).collect();
            limits.push(p.join(","));
        }
        let keys = peer.keys().count();
        out.push_str(&format!(
            "  {}  {:<20} {}{}{}\n",
            peer.short_id(),
            peer.name,
            url,
            if keys > 1 {
                format!("  ({keys} keys)")
            } else {
                String::new()
            },
            if limits.is_empty() {
                String::new()
            } else {
                format!("  allow {}", limits.join(" "))
            }
        ));
    }
    out
}
