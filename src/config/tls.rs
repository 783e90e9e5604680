//! `tls = { cert = "fullchain.pem", key = "privkey.pem" }`: a server's certificate chain and
//! private key, read when the config loads. The master loads the config before the workers
//! drop privileges, so the key file may be readable by root only; workers get the key in
//! memory, never as a file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::aws_lc_rs::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::der::{expect, tbs_after_version, tlv, INTEGER};
use super::ocsp;

/// Under this long before its certificate expires, loading it warns.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A server's certificate chain with its key, ready for handshakes.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Arc<CertifiedKey>,
}

impl Identity {
    /// Reads the PEM chain at `cert` (the server's certificate first) and the PEM key at
    /// `key` (PKCS#8, SEC1 or PKCS#1; ECDSA, RSA or Ed25519), checks that they match and
    /// that the certificate has not expired. The OCSP response to staple (DER) is read from
    /// `ocsp`, else from `CERT.ocsp` when that file exists, and must answer `good` for the
    /// certificate.
    pub fn load(cert: &Path, key: &Path, ocsp: Option<&Path>) -> Result<Identity, String> {
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
        let mut certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| {
            format!(
                "key `{}` does not go with cert `{}` ({e})",
                key.display(),
                cert.display()
            )
        })?;
        let (expires, day) = not_after(&certified.cert[0])
            .ok_or_else(|| format!("cert `{}`: its validity cannot be read", cert.display()))?;
        let now = SystemTime::now();
        if expires <= now {
            return Err(format!("cert `{}` expired on {day}", cert.display()));
        }
        if expires <= now + EXPIRY_WARNING {
            let days = expires.duration_since(now).unwrap_or_default().as_secs() / 86_400;
            let plural = if days == 1 { "" } else { "s" };
            log::warn!(
                "cert `{}` expires on {day}, in {days} day{plural}",
                cert.display()
            );
        }
        certified.ocsp = staple(cert, ocsp, &certified.cert[0])?;
        Ok(Identity {
            key: Arc::new(certified),
        })
    }
}

/// The OCSP response to staple with the certificate at `cert` (DER `leaf`): `ocsp`'s,
/// else `CERT.ocsp`'s when that file exists, checked (see `ocsp.rs`).
fn staple(cert: &Path, ocsp: Option<&Path>, leaf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let beside = cert.with_file_name(format!(
        "{}.ocsp",
        cert.file_name().unwrap_or_default().to_string_lossy()
    ));
    let (path, read) = match ocsp {
        Some(path) => (path, std::fs::read(path)),
        None => match std::fs::read(&beside) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            read => (beside.as_path(), read),
        },
    };
    let response = read.map_err(|e| format!("ocsp `{}`: {e}", path.display()))?;
    let serial =
        serial(leaf).ok_or_else(|| format!("cert `{}`: its serial number cannot be read", cert.display()))?;
    ocsp::check(&response, serial).map_err(|why| format!("ocsp `{}` {why}", path.display()))?;
    Ok(Some(response))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM section of the expected kind".to_string(),
        other => other.to_string(),
    }
}

/// The DER certificate's serial number (the INTEGER's contents).
fn serial(cert: &[u8]) -> Option<&[u8]> {
    expect(INTEGER, tbs_after_version(cert)?).map(|(serial, _)| serial)
}

/// When the DER certificate `cert` stops being valid (its `notAfter`), with that day as
/// `YYYY-MM-DD`.
fn not_after(cert: &[u8]) -> Option<(SystemTime, String)> {
    // serialNumber, signature, issuer, then validity.
    let mut rest = tbs_after_version(cert)?;
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (_, validity, _) = tlv(rest)?;
    let (tag, time, _) = tlv(tlv(validity)?.2)?;
    let text = std::str::from_utf8(time).ok()?;
    // UTCTime YYMMDDHHMMSSZ (years 1950-2049), or GeneralizedTime YYYYMMDDHHMMSSZ.
    let full = match tag {
        0x17 if text.len() == 13 => format!("{}{text}", if &text[..2] < "50" { "20" } else { "19" }),
        0x18 if text.len() == 15 => text.to_string(),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| full.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let seconds = field(8..10)? * 3600 + field(10..12)? * 60 + field(12..14)?;
    let since_epoch = days_from_civil(year, month, day) * 86_400 + seconds;
    let when = UNIX_EPOCH + Duration::from_secs(u64::try_from(since_epoch).ok()?);
    Some((when, format!("{year:04}-{month:02}-{day:02}")))
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 3), 20_790);
    }
}
