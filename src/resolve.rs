//! Turning `host:port` into a socket address without blocking a worker thread. Pingora's own
//! resolution (`HttpPeer::new` with a name) blocks, and panics when a name does not resolve.

use std::net::{IpAddr, SocketAddr};

use pingora::{Error, ErrorType};

use crate::config::HostPort;

/// Resolves `target`. When a name has both IPv4 and IPv6 addresses, an IPv4 one is used:
/// `localhost` lists `::1` first on many systems while apps often listen on 127.0.0.1 only.
pub async fn resolve(target: &HostPort) -> pingora::Result<SocketAddr> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| {
            Error::because(
                ErrorType::ConnectNoRoute,
                format!("cannot resolve {target}"),
                e,
            )
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("{target} resolves to no address"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_addresses_and_names() {
        let ip = HostPort {
            host: "127.0.0.1".into(),
            port: 80,
        };
        assert_eq!(resolve(&ip).await.unwrap(), "127.0.0.1:80".parse().unwrap());
        let v6 = HostPort {
            host: "::1".into(),
            port: 80,
        };
        assert_eq!(resolve(&v6).await.unwrap(), "[::1]:80".parse().unwrap());
        let name = HostPort {
            host: "localhost".into(),
            port: 8080,
        };
        assert_eq!(
            resolve(&name).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        let nowhere = HostPort {
            host: "no-such-host.invalid".into(),
            port: 1,
        };
        assert!(resolve(&nowhere).await.is_err());
    }
}
