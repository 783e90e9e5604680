//! `tls = { cert = "fullchain.pem", key = "privkey.pem" }`: a server's certificate chain and
//! private key, read when the config loads. The master loads the config before the workers
//! drop privileges, so the key file may be readable by root only; workers get the key in
//! memory, never as a file.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A server's certificate chain with its key, ready for handshakes.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Arc<CertifiedKey>,
}

impl Identity {
    /// Reads the PEM chain at `cert` (the server's certificate first) and the PEM key at
    /// `key` (PKCS#8, SEC1 or PKCS#1; ECDSA, RSA or Ed25519), and checks that they match.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("cert `{}`: {}", cert.display(), pem_error(&e)))?;
        if chain.is_empty() {
            return Err(format!("cert `{}` holds no certificate", cert.display()));
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("key `{}`: {}", key.display(), pem_error(&e)))?;
        let signer = (default_provider().key_provider)
            .load_private_key(private)
            .map_err(|e| format!("key `{}`: {e}", key.display()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| {
            format!(
                "key `{}` does not go with cert `{}` ({e})",
                key.display(),
                cert.display()
            )
        })?;
        Ok(Identity {
            key: Arc::new(certified),
        })
    }
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM section of the expected kind".to_string(),
        other => other.to_string(),
    }
}
