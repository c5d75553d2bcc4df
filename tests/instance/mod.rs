//! A peergate instance for the public-identity, peer-command and browser tests: a fresh key, a
//! config written to a temp dir, the real gateway started on loopback (TLS from a test CA, or
//! plain HTTP), in front of an echo app that records anything that reaches it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use peergate::config;
use peergate::identity::PublicIdentity;
use peergate::server::{Gateway, Running};
use rustls::ClientConfig;

use crate::support::{
    free_port, raw_request, wait_listening, EchoApp, RawRequest, RawResponse, TestCa,
};

pub struct Options {
    pub name: String,
    /// The host peers use (and the TLS certificate's name).
    pub host: String,
    pub tls: bool,
    pub profile: Option<String>,
    pub profile_path: Option<String>,
    /// YAML appended to the config (e.g. `peers_file: peers.yaml`, inline `peers:`).
    pub extra: String,
    /// Files written into the instance's directory before it starts.
    pub files: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "Alice".into(),
            host: "alice.test".into(),
            tls: true,
            profile: None,
            profile_path: None,
            extra: String::new(),
            files: Vec::new(),
        }
    }
}

pub struct Instance {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub ca_path: PathBuf,
    pub addr: SocketAddr,
    pub host: String,
    pub public: PublicIdentity,
    pub app: EchoApp,
    pub client: Arc<ClientConfig>,
    pub tls: bool,
    running: Option<Running>,
}

impl Instance {
    pub fn start(options: Options) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let cert = ca.issue(&[options.host.as_str()]);
        let (cert_path, key_path, ca_path) = cert.write_files(&dir.path().join("tls"));
        let key = dir.path().join("identity.pem");
        let identity = peergate::identity::write_new_key(&key, false).unwrap();
        for (name, text) in &options.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let app = EchoApp::start();
        let port = free_port();
        let mut identity_yaml = format!(
            "identity:\n  key_file: identity.pem\n  name: {:?}\n  hosts: [\"{}\"]\n",
            options.name, options.host
        );
        if !options.tls {
            identity_yaml.push_str("  scheme: http\n");
        }
        if let Some(profile) = &options.profile {
            std::fs::write(dir.path().join("profile.md"), profile).unwrap();
            identity_yaml.push_str("  profile: profile.md\n");
        }
        if let Some(path) = &options.profile_path {
            identity_yaml.push_str(&format!("  profile_path: {path:?}\n"));
        }
        let tls_yaml = if options.tls {
            format!(
                "tls: {{ cert_file: {}, key_file: {} }}\n",
                cert_path.display(),
                key_path.display()
            )
        } else {
            String::new()
        };
        let text = format!(
            "{identity_yaml}listen: {{ inbound: \"127.0.0.1:{port}\", outbound: \"127.0.0.1:{}\", admin: \"127.0.0.1:{}\", threads: 2 }}\n{tls_yaml}app: {{ upstream: \"{}\" }}\nroutes:\n  - {{ path: \"/*\", access: peers }}\n{}\n",
            free_port(),
            free_port(),
            app.addr(),
            options.extra
        );
        let config_path = dir.path().join("peergate.yaml");
        std::fs::write(&config_path, text).unwrap();
        let loaded = config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let running = Gateway::build(&loaded).unwrap().spawn();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr);
        Instance {
            config_path,
            ca_path,
            addr,
            host: options.host,
            public: identity.public().clone(),
            app,
            client: ca.client_config(&[b"http/1.1"]),
            tls: options.tls,
            running: Some(running),
            dir,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// `host:port` as peers write it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.addr.port())
    }

    /// The URL `peer add` is given: by address, which the test certificate also carries.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// Sends `method target` with `Host` = our authority.
    pub async fn request(&self, method: &str, target: &str) -> RawResponse {
        self.send(RawRequest::new(method, target).header("Host", self.authority()))
            .await
    }

    pub async fn send(&self, req: RawRequest) -> RawResponse {
        let tls = self.tls.then(|| (self.client.clone(), self.host.as_str()));
        raw_request(self.addr, tls, &req.to_bytes())
            .await
            .expect("the gateway answers")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop(false);
        }
    }
}
