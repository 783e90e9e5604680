//! Reading DER, as far as checking a certificate's dates and serial and an OCSP response
//! needs: one element at a time, never trusting a length.

/// One DER element at the start of `der`: its tag, its contents, and what follows it.
pub(super) fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
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

/// The contents of the element at the start of `der` if its tag is `tag`, and what follows.
pub(super) fn expect(tag: u8, der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (found, body, rest) = tlv(der)?;
    (found == tag).then_some((body, rest))
}

/// `der` without its first element when that one has tag `tag` (an optional field).
pub(super) fn skip_optional(tag: u8, der: &[u8]) -> &[u8] {
    expect(tag, der).map_or(der, |(_, rest)| rest)
}

/// A certificate's `tbsCertificate` fields from its serial number on (the version skipped).
pub(super) fn tbs_after_version(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = expect(SEQUENCE, cert)?;
    let (tbs, _) = expect(SEQUENCE, certificate)?;
    Some(skip_optional(0xa0, tbs))
}

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const INTEGER: u8 = 0x02;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_short_and_long() {
        assert_eq!(
            tlv(&[0x30, 0x02, 1, 2, 9]),
            Some((0x30, &[1u8, 2][..], &[9u8][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7; 0x80]].concat();
        assert_eq!(tlv(&long).map(|(_, body, _)| body.len()), Some(0x80));
        assert_eq!(tlv(&[0x30, 0x05, 1]), None, "shorter than it says");
        assert_eq!(expect(0x02, &[0x30, 0x00]), None, "another tag");
        assert_eq!(skip_optional(0xa0, &[0xa0, 0x01, 5, 0x02]), &[0x02]);
        assert_eq!(skip_optional(0xa0, &[0x02, 0x00]), &[0x02, 0x00]);
    }
}
