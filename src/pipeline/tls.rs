//! The TLS side of each listen address: rustls' server config, whose certificate the
//! client's SNI name picks among the servers on the address by the same rules as Host
//! (`names.rs`); no name, or one no server has, gets the default server's. Session tickets
//! are sealed with the keys every worker shares ([`SharedTickets`]), so a client resumes
//! whichever worker it reaches, after reloads and upgrades too.

use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::names::Names;
use crate::config::{Address, Config};
use crate::shared::{TicketKey, Tickets};

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

/// Session tickets sealed with AES-256-GCM under the shared current key: the key's id,
/// a random nonce, then the sealed session. The previous key still opens its tickets.
#[derive(Debug)]
struct SharedTickets {
    tickets: Tickets,
    /// What clients are told a ticket lives, in seconds: as long as its key may still open
    /// it, two rotation periods (sealed just after a rotation, opened just before the
    /// second one after).
    lifetime: u32,
}

impl SharedTickets {
    fn sealer(key: &TicketKey) -> Option<LessSafeKey> {
        Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.secret).ok()?))
    }
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.tickets.keys().current?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(8 + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&key.id.to_le_bytes());
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce);
        Self::sealer(&key)?
            .seal_in_place_append_tag(nonce, Aad::from(&ticket[..8]), &mut sealed)
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (id, rest) = cipher.split_first_chunk::<8>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let keys = self.tickets.keys();
        let id = u64::from_le_bytes(*id);
        let key = [keys.current, keys.previous]
            .into_iter()
            .flatten()
            .find(|key| key.id == id)?;
        let mut plain = sealed.to_vec();
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let opened = Self::sealer(&key)?
            .open_in_place(nonce, Aad::from(&cipher[..8]), &mut plain)
            .ok()?;
        let len = opened.len();
        plain.truncate(len);
        Some(plain)
    }
}

/// aws-lc-rs' cipher suites and signing with the key exchange groups ring offered (X25519,
/// P-256, P-384): its default also takes X25519MLKEM768, which browsers list first, and a
/// post-quantum key exchange (a 1.1–1.2 KiB key share each way, and the CPU of ML-KEM) is a
/// choice of its own, not part of changing the provider (decision 0005).
fn provider() -> CryptoProvider {
    CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..default_provider()
    }
}

/// For each of `listeners`, the TLS config of its servers (`None` for plain HTTP); their
/// session tickets are sealed with `tickets`' keys.
pub fn server_configs(
    config: &Config,
    listeners: &[Address],
    tickets: Tickets,
) -> Result<Vec<Option<Arc<ServerConfig>>>, String> {
    let lifetime = (2 * config.tls_ticket_rotation).as_millis().div_ceil(1000);
    let lifetime = u32::try_from(lifetime).unwrap_or(u32::MAX);
    let ticketer: Arc<dyn ProducesTickets> = Arc::new(SharedTickets { tickets, lifetime });
    let keys: Vec<Option<Arc<CertifiedKey>>> = (config.servers.iter())
        .map(|server| server.tls.as_ref().map(|tls| Arc::clone(&tls.key)))
        .collect();
    let provider = Arc::new(provider());
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
        let mut tls = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS on {addr}: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls.ticketer = Arc::clone(&ticketer);
        configs.push(Some(Arc::new(tls)));
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn tickets_open_under_the_current_and_previous_key_only() {
        let tickets = Tickets::for_tests();
        let sealer = SharedTickets { tickets, lifetime: 2 };
        assert_eq!(sealer.encrypt(b"session"), None, "no key yet");
        let now = SystemTime::now();
        tickets.rotate([7; 32], now);
        let first = sealer.encrypt(b"session one").unwrap();
        assert_eq!(sealer.decrypt(&first).as_deref(), Some(&b"session one"[..]));
        assert_ne!(
            sealer.encrypt(b"session one").unwrap(),
            first,
            "a fresh nonce each time"
        );
        let mut tampered = first.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.decrypt(&tampered), None);
        assert_eq!(sealer.decrypt(&first[..20]), None, "truncated");
        tickets.rotate([8; 32], now);
        assert_eq!(
            sealer.decrypt(&first).as_deref(),
            Some(&b"session one"[..]),
            "the previous key"
        );
        tickets.rotate([9; 32], now);
        assert_eq!(sealer.decrypt(&first), None, "two keys on: gone");
    }
}
