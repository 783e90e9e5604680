//! Who listens on an address: the process behind an `EADDRINUSE`, for the one line that says
//! why shoal cannot start (`127.0.0.1:8080 is already in use (by pid 4810, shoal: master)`).
//!
//! Read from /proc only, on the error path: the listening sockets in `/proc/net/tcp{,6}` give
//! the socket's inode, and the `socket:[INODE]` links under `/proc/*/fd` the processes that
//! hold it. Whatever cannot be read (another user's processes, hidepid) leaves the owner
//! unknown; nothing here can fail the caller.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Its `comm` (`shoal: master`, `nginx`, `python3`).
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}, {}", self.pid, self.name)
    }
}

/// The process listening on (or over) `addr`, if /proc shows one to us. Among several
/// holders of the socket (a master and its workers), the one whose parent is not a holder.
pub fn owner_of(addr: SocketAddr) -> Option<Owner> {
    let holders = holders(addr);
    let top = holders
        .iter()
        .copied()
        .find(|pid| parent_of(*pid).is_none_or(|parent| !holders.contains(&parent)))?;
    let name = std::fs::read_to_string(format!("/proc/{top}/comm")).ok()?;
    Some(Owner {
        pid: top,
        name: name.trim_end().to_string(),
    })
}

/// Every process /proc shows us holding a socket that listens on (or over) `addr`,
/// ascending.
pub fn holders(addr: SocketAddr) -> Vec<u32> {
    let mut inodes = Vec::new();
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        inodes.extend(
            listening(&text, v6)
                .into_iter()
                .filter(|(bound, _)| covers(*bound, addr))
                .map(|(_, inode)| inode),
        );
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    holders_of(&inodes)
}

/// Listening sockets in a /proc/net/tcp{,6} table: address and inode.
fn listening(table: &str, v6: bool) -> Vec<(SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = if v6 { ipv6(ip)? } else { ipv4(ip)? };
            let inode = fields.get(9)?.parse().ok()?;
            Some((SocketAddr::new(ip, port), inode))
        })
        .collect()
}

/// The kernel prints an IPv4 address as one 32-bit word in host byte order.
fn ipv4(hex: &str) -> Option<IpAddr> {
    let word = u32::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 8)?;
    Some(IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())))
}

/// ... and an IPv6 address as four such words.
fn ipv6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// True when a socket listening on `bound` takes connections for `wanted` (same port, and
/// the same address or a wildcard on either side).
fn covers(bound: SocketAddr, wanted: SocketAddr) -> bool {
    bound.port() == wanted.port()
        && (bound.ip() == wanted.ip() || bound.ip().is_unspecified() || wanted.ip().is_unspecified())
}

/// Pids (ascending) that hold a socket with one of `inodes` open.
fn holders_of(inodes: &[u64]) -> Vec<u32> {
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = processes
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            fds.filter_map(Result::ok).any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| links.iter().any(|l| target.as_os_str() == l.as_str()))
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn listening_sockets_are_read_from_the_kernel_tables() {
        assert_eq!(
            listening(TCP, false),
            [
                ("127.0.0.1:8080".parse().unwrap(), 4242),
                ("0.0.0.0:80".parse().unwrap(), 77)
            ],
            "established connections are not listeners"
        );
        assert_eq!(listening(TCP6, true), [("[::1]:8081".parse().unwrap(), 99)]);
        assert!(listening("header\n garbage line\n", false).is_empty());
    }

    #[test]
    fn a_wildcard_on_either_side_covers_the_port() {
        let cases = [
            ("127.0.0.1:8080", "127.0.0.1:8080", true),
            ("0.0.0.0:8080", "127.0.0.1:8080", true),
            ("127.0.0.1:8080", "0.0.0.0:8080", true),
            ("[::]:8080", "127.0.0.1:8080", true),
            ("127.0.0.2:8080", "127.0.0.1:8080", false),
            ("127.0.0.1:8081", "127.0.0.1:8080", false),
        ];
        for (bound, wanted, want) in cases {
            assert_eq!(
                covers(bound.parse().unwrap(), wanted.parse().unwrap()),
                want,
                "{bound} over {wanted}"
            );
        }
    }

    #[test]
    fn the_owner_of_a_socket_of_ours_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let owner = owner_of(listener.local_addr().unwrap()).expect("an owner");
        assert_eq!(owner.pid, std::process::id());
    }
}
