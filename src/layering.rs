//! Which top-level module may import which: the layers of docs/architecture.md, checked.
//!
//! Each module imports only from the modules below it, so a lower layer can be read, tested
//! and replaced without the ones above. The test reads every source file and fails on any
//! `crate::` path to a module its layer may not use.

/// Every top-level module and the modules it may import, bottom layer first.
const LAYERS: &[(&str, &[&str])] = &[
    ("sys", &[]),
    ("stats", &[]),
    ("status", &[]),
    ("control", &["status"]),
    ("prometheus", &[]),
    ("io", &["sys"]),
    ("shared", &["sys"]),
    ("http", &["io"]),
    ("config", &["http", "shared"]),
    ("channel", &["stats"]),
    ("files", &["config", "http", "io", "sys"]),
    ("cache", &["config", "http", "io", "stats"]),
    (
        "proxy",
        &["channel", "config", "http", "io", "shared", "stats", "sys"],
    ),
    (
        "pipeline",
        &[
            "cache", "config", "files", "http", "io", "proxy", "shared", "stats",
        ],
    ),
    (
        "worker",
        &[
            "channel", "config", "files", "http", "io", "pipeline", "proxy", "shared", "stats", "sys",
        ],
    ),
    (
        "master",
        &[
            "cache",
            "channel",
            "config",
            "control",
            "prometheus",
            "shared",
            "stats",
            "status",
            "sys",
            "worker",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::path::{Path, PathBuf};

    /// Every `.rs` file of a top-level module (`src/NAME.rs` or under `src/NAME/`).
    fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
        let single = src.join(format!("{module}.rs"));
        if single.is_file() {
            return vec![single];
        }
        let mut files = Vec::new();
        let mut dirs: Vec<PathBuf> = [src.join(module)].into_iter().filter(|d| d.is_dir()).collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files
    }

    /// The top-level modules a line names through `crate::` paths, `crate::{a, b}` included.
    fn named_modules(line: &str) -> Vec<String> {
        let mut names = Vec::new();
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let group = rest
                .strip_prefix('{')
                .map(|inner| &inner[..inner.find('}').unwrap_or(inner.len())]);
            let parts: Vec<&str> = match group {
                Some(inner) => inner.split(',').collect(),
                None => vec![rest],
            };
            for part in parts {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    names.push(name);
                }
            }
        }
        names
    }

    #[test]
    fn every_module_imports_only_from_the_layers_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut listed: Vec<&str> = LAYERS.iter().map(|(module, _)| *module).collect();
        let mut violations = Vec::new();
        for (module, allowed) in LAYERS {
            for file in files_of(&src, module) {
                let text = std::fs::read_to_string(&file).unwrap();
                for (number, line) in text.lines().enumerate() {
                    for name in named_modules(line) {
                        if name != *module && !allowed.contains(&name.as_str()) {
                            violations.push(format!(
                                "{}:{}: {module} uses {name}",
                                file.display(),
                                number + 1
                            ));
                        }
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "imports across layers:\n{}",
            violations.join("\n")
        );
        // A new top-level module must be given a layer here.
        listed.extend(["lib", "main", "layering"]);
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                listed.contains(&name.as_str()),
                "src/{name} has no layer in LAYERS"
            );
        }
    }

    #[test]
    fn crate_paths_are_found_in_every_spelling() {
        assert_eq!(named_modules("use crate::io::{Input, Output};"), ["io"]);
        assert_eq!(
            named_modules("use crate::{config, http::request};"),
            ["config", "http"]
        );
        assert_eq!(
            named_modules("x: crate::worker::EXIT_FATAL, crate::sys::fork()"),
            ["worker", "sys"]
        );
        assert!(named_modules("use super::input;").is_empty());
    }
}
