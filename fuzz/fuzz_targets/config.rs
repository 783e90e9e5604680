//! The config loader (`config::load_text`) on arbitrary TOML text: it must answer every input
//! with a config or a one-line `LOCATION: message` error, never a panic.
//!
//! Paths in the text resolve against a fresh temp dir holding `site/` (so `root = "site"` is
//! valid); upstream hosts resolve only as literal addresses while fuzzing (no DNS).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shoal-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("site")).expect("create the fuzz site dir");
        dir.join("shoal.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match shoal::config::load_text(config_path(), text) {
        Ok(config) => {
            assert!(config.workers >= 1);
            assert!(!config.servers.is_empty());
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.contains('\n'), "a multi-line error: {shown:?}");
            assert!(!e.message.is_empty(), "an empty message at {}", e.location);
        }
    }
});
