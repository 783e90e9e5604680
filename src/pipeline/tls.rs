//! The TLS side of each listen address: rustls' server config, whose certificate the
//! client's SNI name picks among the servers on the address by the same rules as Host
//! (`names.rs`); no name, or one no server has, gets the default server's.

use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::names::Names;
use crate::config::{Address, Config};

/// The certificates of the servers on one address, by SNI name.
#[derive(Debug)]
struct ByName {
    names: Names,
    /// By server index in the config (`None` for servers elsewhere).
    keys: Vec<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let server = self.names.server_for(hello.server_name().map(str::as_bytes));
        self.keys[server].clone()
    }
}

/// For each of `listeners`, the TLS config of its servers (`None` for plain HTTP).
pub fn server_configs(
    config: &Config,
    listeners: &[Address],
) -> Result<Vec<Option<Arc<ServerConfig>>>, String> {
    let keys: Vec<Option<Arc<CertifiedKey>>> = (config.servers.iter())
        .map(|server| server.tls.as_ref().map(|tls| Arc::clone(&tls.key)))
        .collect();
    let mut configs = Vec::with_capacity(listeners.len());
    for addr in listeners {
        let servers = config.servers_on(addr);
        if !servers.iter().any(|&server| keys[server].is_some()) {
            configs.push(None);
            continue;
        }
        let resolver = ByName {
            names: Names::new(config, &servers),
            keys: keys.clone(),
        };
        let mut tls = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS on {addr}: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        configs.push(Some(Arc::new(tls)));
    }
    Ok(configs)
}
