//! The OCSP response a server staples (`tls = { ..., ocsp = "FILE" }`, or `CERT.ocsp` beside
//! the certificate). rustls sends its bytes as they are, and a client that asks for a staple
//! (browsers do) aborts the handshake on one it cannot read; an empty one even makes rustls
//! panic. So the file is checked when the config loads: one DER `OCSPResponse` (RFC 6960)
//! that says `successful`, whose basic response answers for the certificate (by its serial
//! number) with `good`. Its signature and freshness are left to the client, as with any
//! staple: refresh the file and reload before its `nextUpdate`.

use super::der::{expect, skip_optional, tlv, INTEGER, SEQUENCE};

/// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1.
const BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// What a well-formed response says about the certificate.
#[derive(Debug, PartialEq, Eq)]
enum Says {
    Good,
    Revoked,
    Unknown,
    /// No single response for the certificate's serial.
    Elsewhere,
    /// A `responseStatus` other than successful.
    Status(u8),
    NotBasic,
}

/// Whether `response` may be stapled with the certificate whose serial number (the DER
/// INTEGER's contents) is `serial`; else what is wrong, to follow the file's name.
pub(super) fn check(response: &[u8], serial: &[u8]) -> Result<(), String> {
    if response.is_empty() {
        return Err("is empty".to_string());
    }
    let Some(says) = read(response, serial) else {
        return Err(if response.starts_with(b"-----BEGIN") {
            "is PEM; staple the DER form (what `openssl ocsp -respout` writes)".to_string()
        } else {
            "is not a DER OCSP response".to_string()
        });
    };
    match says {
        Says::Good => Ok(()),
        Says::Revoked => Err("says the certificate is revoked".to_string()),
        Says::Unknown => Err("says the certificate's status is unknown".to_string()),
        Says::Elsewhere => Err(format!(
            "answers for another certificate, not serial {} (left from before a renewal?)",
            hex(serial)
        )),
        Says::Status(status) => Err(format!("says `{}`, not `successful`", status_name(status))),
        Says::NotBasic => Err("is not a basic OCSP response".to_string()),
    }
}

/// `None` unless `response` is exactly one well-formed `OCSPResponse`.
fn read(response: &[u8], serial: &[u8]) -> Option<Says> {
    let (body, after) = expect(SEQUENCE, response)?;
    if !after.is_empty() {
        return None;
    }
    let (status, body) = expect(ENUMERATED, body)?;
    match status {
        [0] => {}
        [status] => return Some(Says::Status(*status)),
        _ => return None,
    }
    // responseBytes [0] EXPLICIT: responseType, then the response as an OCTET STRING.
    let (bytes, _) = expect(0xa0, body)?;
    let (bytes, _) = expect(SEQUENCE, bytes)?;
    let (kind, bytes) = expect(OID, bytes)?;
    if kind != BASIC {
        return Some(Says::NotBasic);
    }
    let (basic, _) = expect(OCTET_STRING, bytes)?;
    let (basic, _) = expect(SEQUENCE, basic)?;
    // tbsResponseData: version [0] (optional), responderID, producedAt, responses.
    let (data, _) = expect(SEQUENCE, basic)?;
    let (_, _, data) = tlv(skip_optional(0xa0, data))?;
    let (_, data) = expect(GENERALIZED_TIME, data)?;
    let (mut responses, _) = expect(SEQUENCE, data)?;
    while !responses.is_empty() {
        let (single, rest) = expect(SEQUENCE, responses)?;
        responses = rest;
        // certID: hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber; then certStatus.
        let (mut id, status) = expect(SEQUENCE, single)?;
        for _ in 0..3 {
            id = tlv(id)?.2;
        }
        if expect(INTEGER, id)?.0 != serial {
            continue;
        }
        return match tlv(status)?.0 {
            0x80 => Some(Says::Good),
            0xa1 => Some(Says::Revoked),
            0x82 => Some(Says::Unknown),
            _ => None,
        };
    }
    Some(Says::Elsewhere)
}

const ENUMERATED: u8 = 0x0a;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const GENERALIZED_TIME: u8 = 0x18;

fn status_name(status: u8) -> String {
    match status {
        1 => "malformedRequest".to_string(),
        2 => "internalError".to_string(),
        3 => "tryLater".to_string(),
        5 => "sigRequired".to_string(),
        6 => "unauthorized".to_string(),
        other => format!("status {other}"),
    }
}

/// A serial number as openssl prints it (`openssl x509 -serial`).
fn hex(serial: &[u8]) -> String {
    let digits = serial.strip_prefix(&[0]).unwrap_or(serial);
    digits.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `OCSPResponse` for serial `serial` with certStatus tag `status` (a good one is
    /// `80 00`), laid out as openssl writes them, signature and certificates aside.
    fn response(serial: &[u8], status: u8) -> Vec<u8> {
        fn wrap(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
            let body = parts.concat();
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
            }
            out.extend(body);
            out
        }
        let cert_id = wrap(
            SEQUENCE,
            &[
                &wrap(
                    SEQUENCE,
                    &[&[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a], &[0x05, 0x00]],
                ),
                &wrap(OCTET_STRING, &[&[1; 20]]),
                &wrap(OCTET_STRING, &[&[2; 20]]),
                &wrap(INTEGER, &[serial]),
            ],
        );
        let when = wrap(GENERALIZED_TIME, &[b"20261203131836Z"]);
        let single = wrap(SEQUENCE, &[&cert_id, &[status, 0x00], &when]);
        let data = wrap(
            SEQUENCE,
            &[
                &wrap(0xa1, &[&wrap(SEQUENCE, &[])]),
                &when,
                &wrap(SEQUENCE, &[&single]),
            ],
        );
        let basic = wrap(
            SEQUENCE,
            &[
                &data,
                &wrap(SEQUENCE, &[&[0x06, 0x01, 0x2a]]),
                &[0x03, 0x01, 0x00],
            ],
        );
        let bytes = wrap(SEQUENCE, &[&wrap(OID, &[BASIC]), &wrap(OCTET_STRING, &[&basic])]);
        wrap(SEQUENCE, &[&[ENUMERATED, 0x01, 0x00], &wrap(0xa0, &[&bytes])])
    }

    #[test]
    fn a_good_answer_for_the_certificate_is_the_only_staple() {
        let serial = [0x1c, 0x5e, 0xcc];
        assert_eq!(check(&response(&serial, 0x80), &serial), Ok(()));
        // What the integration tests cannot get from `openssl ocsp`: unknown, and a status
        // that is not `successful` (tryLater, sent without responseBytes).
        let unknown = check(&response(&serial, 0x82), &serial).unwrap_err();
        assert_eq!(unknown, "says the certificate's status is unknown");
        let later = check(&[0x30, 0x03, ENUMERATED, 0x01, 0x03], &serial).unwrap_err();
        assert_eq!(later, "says `tryLater`, not `successful`");
        let other = check(&response(&[0x00, 0x9a], 0x80), &serial).unwrap_err();
        assert!(other.contains("not serial 1C5ECC"), "{other}");
        let mut trailing = response(&serial, 0x80);
        trailing.push(0);
        assert_eq!(
            check(&trailing, &serial).unwrap_err(),
            "is not a DER OCSP response"
        );
        let cut = response(&serial, 0x80);
        for len in [1, 2, 10, cut.len() - 1] {
            assert!(check(&cut[..len], &serial).is_err(), "{len} bytes");
        }
    }
}
