//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address).
//!
//! An IPv4 address has one form whichever socket it arrives on: a dual-stack listener sees
//! `10.1.2.3` as `::ffff:10.1.2.3`. So an address is matched in its IPv4 form when it has one,
//! and a range inside `::ffff:0:0/96` is held as the IPv4 range it spells
//! (`::ffff:10.0.0.0/104` is `10.0.0.0/8`); other IPv6 ranges, `::/0` included, hold IPv6
//! addresses only.

use std::net::IpAddr;

/// A range of addresses: `addr` with its first `prefix` bits significant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Reads `10.0.0.0/8`, `::1`, `127.0.0.1`; host bits must be zero. A range inside
    /// `::ffff:0:0/96` becomes the IPv4 range it spells.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address or a range like 10.0.0.0/8"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= bits => p,
                _ => return Err(format!("`{text}`: the prefix length must be 0 to {bits}")),
            },
        };
        let cidr = Cidr { addr, prefix };
        if mask(addr, prefix) != bits_of(addr) {
            return Err(format!(
                "`{text}` has host bits set (the range starts at {})",
                cidr.start()
            ));
        }
        Ok(cidr.in_ipv4_form())
    }

    /// This range as IPv4, when it lies inside `::ffff:0:0/96` (the IPv4-mapped addresses).
    fn in_ipv4_form(self) -> Cidr {
        match self.addr {
            IpAddr::V6(v6) if self.prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }

    /// True when `ip` is in the range (an IPv4-mapped IPv6 address counts as the IPv4
    /// address it maps).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == mask(self.addr, self.prefix)
    }

    fn start(&self) -> IpAddr {
        let masked = mask(self.addr, self.prefix);
        match self.addr {
            IpAddr::V4(_) => IpAddr::from((masked as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
        }
    }
}

fn bits_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// `ip`'s first `prefix` bits.
fn mask(ip: IpAddr, prefix: u8) -> u128 {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let keep = if prefix == 0 {
        0
    } else {
        u128::MAX << (width - u32::from(prefix))
    };
    let all = if width == 32 { u32::MAX as u128 } else { u128::MAX };
    bits_of(ip) & keep & all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_hold_their_addresses_and_no_others() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains(ip("10.1.2.3")) && lan.contains(ip("::ffff:10.9.9.9")));
        assert!(!lan.contains(ip("11.0.0.1")) && !lan.contains(ip("::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    /// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`: they match IPv4 ranges,
    /// and ranges written in the mapped form, whichever form the address comes in.
    #[test]
    fn mapped_addresses_and_ranges_are_their_ipv4_selves() {
        let mapped = ip("::ffff:10.1.2.3");
        assert!(Cidr::parse("10.1.2.3").unwrap().contains(mapped));
        for range in ["::ffff:0:0/96", "::ffff:10.0.0.0/104", "::ffff:10.1.2.3"] {
            let cidr = Cidr::parse(range).unwrap();
            assert!(cidr.contains(mapped), "{range} holds {mapped}");
            assert!(cidr.contains(ip("10.1.2.3")), "{range} holds 10.1.2.3");
            assert!(!cidr.contains(ip("11.1.2.3")) || range == "::ffff:0:0/96");
            assert!(!cidr.contains(ip("::1")), "{range} holds no IPv6 address");
        }
        assert_eq!(
            Cidr::parse("::ffff:0:0/96").unwrap(),
            Cidr::parse("0.0.0.0/0").unwrap()
        );
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.0/104").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap()
        );
        // Ranges beyond the mapped block hold IPv6 addresses only.
        let any_v6 = Cidr::parse("::/0").unwrap();
        assert!(any_v6.contains(ip("2001:db8::1")) && any_v6.contains(ip("::1")));
        assert!(!any_v6.contains(mapped) && !any_v6.contains(ip("10.1.2.3")));
        assert!(!Cidr::parse("::1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("::1")));
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("host bits set (the range starts at 10.0.0.0)"));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("ten/8").unwrap_err().contains("not an address"));
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }
}
