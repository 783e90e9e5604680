//! TLS on a client connection (`io::Tls`, over rustls) fed arbitrary bytes as a client
//! would send them, before and during the handshake, in pieces: every input must end in
//! bytes read, a refusal or a wait, never a panic or a hang.
//!
//! The server side is shoal's: its SNI resolver and ticketer over a config with one TLS
//! server (a fixed self-signed P-256 certificate, valid for a century).
#![no_main]

use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use shoal::io::{Stream, Tls, Transport};

const CERT: &str = include_str!("../../src/io/tls/localhost.pem");
const KEY: &str = include_str!("../../src/io/tls/localhost.key");

fn server_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shoal-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("site")).expect("create the fuzz dir");
        std::fs::write(dir.join("cert.pem"), CERT).expect("write the certificate");
        std::fs::write(dir.join("key.pem"), KEY).expect("write the key");
        let text = "[[server]]\nlisten = [\"127.0.0.1:8443\"]\ntls = { cert = \"cert.pem\", key = \"key.pem\" }\n\
                    [[server.route]]\nprefix = \"/\"\nroot = \"site\"\n";
        static LOADED: OnceLock<shoal::config::Config> = OnceLock::new();
        let config = LOADED.get_or_init(|| {
            shoal::config::load_text(&dir.join("shoal.toml"), text).expect("the fuzz config loads")
        });
        let shared = shoal::shared::Shared::create().expect("shared memory");
        // Its address in a static: the leak checker then sees the state reachable, as it is
        // for the life of the process.
        static SHARED_AT: OnceLock<usize> = OnceLock::new();
        SHARED_AT.get_or_init(|| shared as *const shoal::shared::Shared as usize);
        shared.tickets().rotate([7; 32], SystemTime::now());
        let addresses = config.listen_addresses();
        let configs = shoal::pipeline::tls::server_configs(config, &addresses, shared.tickets()).expect("TLS config");
        configs[0].clone().expect("a TLS address")
    }))
}

fuzz_target!(|data: &[u8]| {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    ours.set_nonblocking(true).expect("non-blocking");
    let socket = Stream::Unix(mio::net::UnixStream::from_std(ours));
    let mut tls = Tls::new(socket, server_config()).expect("a TLS connection");
    let mut plaintext = [0u8; 16 * 1024];
    for piece in data.chunks(997) {
        if theirs.write_all(piece).is_err() {
            return;
        }
        loop {
            match tls.read(&mut plaintext) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        let _ = tls.flush_pending();
    }
});
