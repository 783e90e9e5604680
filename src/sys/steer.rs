//! Steering new connections within a SO_REUSEPORT group with a classic BPF program.
//!
//! The kernel picks a listening socket for each new connection; by default by hash over
//! every socket in the group. A program attached with SO_ATTACH_REUSEPORT_CBPF returns the
//! *index* of the socket in the group instead (sockets are indexed in the order they started
//! listening). Steering lets the master send no new connection to a slot whose worker is hung,
//! dead or being removed, while the connections already queued there wait for a worker.

use std::io;
use std::os::fd::AsRawFd;

/// `SO_ATTACH_REUSEPORT_CBPF` / `SO_DETACH_REUSEPORT_BPF` (asm-generic values, x86 and arm).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

/// Classic BPF opcodes used below (linux/bpf_common.h): class | operation | source.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20)
const BPF_ALU_MOD_K: u16 = 0x94; // BPF_ALU (0x04) | BPF_MOD (0x90) | BPF_K (0x00)
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP (0x05) | BPF_JEQ (0x10) | BPF_K (0x00)
const BPF_RET_K: u16 = 0x06; // BPF_RET (0x06) | BPF_K (0x00)

/// The program: pick a random entry of `targets` and return it as the socket index.
fn program(targets: &[u32]) -> Vec<libc::sock_filter> {
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let random = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut prog = vec![
        op(BPF_LD_W_ABS, 0, 0, random),
        op(BPF_ALU_MOD_K, 0, 0, targets.len() as u32),
    ];
    let (last, rest) = targets.split_last().expect("at least one target");
    for (i, target) in rest.iter().enumerate() {
        prog.push(op(BPF_JMP_JEQ_K, 0, 1, i as u32));
        prog.push(op(BPF_RET_K, 0, 0, *target));
    }
    prog.push(op(BPF_RET_K, 0, 0, *last));
    prog
}

/// Sends new connections of `socket`'s group only to the sockets at `targets` (indices in
/// listen order). An empty `targets` removes the steering (back to the kernel's hash).
pub fn steer(socket: &impl AsRawFd, targets: &[u32]) -> io::Result<()> {
    if targets.is_empty() {
        let detached =
            super::net::set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0);
        // ENOENT: no program was attached, which is what we wanted.
        return match detached {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        };
    }
    let mut prog = program(targets);
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use socket2::{Domain, Socket, Type};

    fn reuseport_listener(addr: std::net::SocketAddr) -> TcpListener {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.listen(128).unwrap();
        s.set_nonblocking(true).unwrap();
        s.into()
    }

    #[test]
    fn steered_group_sends_every_connection_to_the_target() {
        let first = reuseport_listener("127.0.0.1:0".parse().unwrap());
        let addr = first.local_addr().unwrap();
        let second = reuseport_listener(addr);
        steer(&first, &[1]).unwrap();
        let clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut accepted_by_second = 0;
        while let Ok((mut s, _)) = second.accept() {
            s.write_all(b"x").unwrap();
            accepted_by_second += 1;
        }
        assert!(first.accept().is_err(), "the unsteered socket got a connection");
        assert_eq!(accepted_by_second, clients.len());
        steer(&first, &[]).unwrap();
        let mut c = clients.into_iter().next().unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
    }
}
