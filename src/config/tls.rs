//! `tls = { cert = "fullchain.pem", key = "privkey.pem" }`: a server's certificate chain and
//! private key, read when the config loads. The master loads the config before the workers
//! drop privileges, so the key file may be readable by root only; workers get the key in
//! memory, never as a file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

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
    /// `ocsp`, else from `CERT.ocsp` when that file exists.
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
        let beside = cert.with_file_name(format!(
            "{}.ocsp",
            cert.file_name().unwrap_or_default().to_string_lossy()
        ));
        certified.ocsp = match ocsp {
            Some(path) => Some(std::fs::read(path).map_err(|e| format!("ocsp `{}`: {e}", path.display()))?),
            None => std::fs::read(beside).ok(),
        };
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

/// When the DER certificate `cert` stops being valid (its `notAfter`), with that day as
/// `YYYY-MM-DD`.
fn not_after(cert: &[u8]) -> Option<(SystemTime, String)> {
    let (_, certificate, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(certificate)?;
    // version [0] (optional), serialNumber, signature, issuer, then validity.
    let mut rest = tbs;
    if let Some((0xa0, _, after)) = tlv(rest) {
        rest = after;
    }
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

/// One DER element at the start of `der`: its tag, its contents, and what follows it.
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        short @ 0..=0x7f => (usize::from(short), rest),
        long => {
            let bytes = usize::from(long & 0x7f);
            if bytes == 0 || bytes > 4 || rest.len() < bytes {
                return None;
            }
            let len = rest[..bytes].iter().fold(0, |len, &b| len << 8 | usize::from(b));
            (len, &rest[bytes..])
        }
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
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

    #[test]
    fn der_lengths_short_and_long() {
        assert_eq!(
            tlv(&[0x30, 0x02, 1, 2, 9]),
            Some((0x30, &[1u8, 2][..], &[9u8][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7; 0x80]].concat();
        assert_eq!(tlv(&long).map(|(_, body, _)| body.len()), Some(0x80));
        assert_eq!(tlv(&[0x30, 0x05, 1]), None, "shorter than it says");
    }
}
