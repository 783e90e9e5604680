//! Content-Type values for files (static files, error pages), chosen by file extension.
//!
//! Owns the mapping from a file name to the `Content-Type` header value. Invariant: every textual
//! type carries `; charset=utf-8` and nothing else does; unknown extensions are served as
//! `application/octet-stream` so browsers never sniff them into something executable.

use std::borrow::Cow;

/// Served when the extension is missing or unknown.
const FALLBACK: &str = "application/octet-stream";

/// Content-Type value for a file name by its extension, e.g. "text/html; charset=utf-8",
/// "image/png", "application/octet-stream" when unknown. Text types (text/*, and
/// application/javascript, application/json, application/xml, image/svg+xml) get "; charset=utf-8".
pub fn content_type_for(path: &str) -> Cow<'static, str> {
    let essence = mime_guess::from_path(path).first_raw().unwrap_or(FALLBACK);
    if let Some(with_charset) = common_text_type(essence) {
        return Cow::Borrowed(with_charset);
    }
    if essence.starts_with("text/") {
        return Cow::Owned(format!("{essence}; charset=utf-8"));
    }
    Cow::Borrowed(essence)
}

/// The charset-qualified literal for frequent text types, so they need no allocation.
fn common_text_type(essence: &str) -> Option<&'static str> {
    let with_charset = match essence {
        "text/html" => "text/html; charset=utf-8",
        "text/css" => "text/css; charset=utf-8",
        "text/plain" => "text/plain; charset=utf-8",
        "text/javascript" => "text/javascript; charset=utf-8",
        "text/csv" => "text/csv; charset=utf-8",
        "text/markdown" => "text/markdown; charset=utf-8",
        "text/xml" => "text/xml; charset=utf-8",
        "application/javascript" => "application/javascript; charset=utf-8",
        "application/json" => "application/json; charset=utf-8",
        "application/xml" => "application/xml; charset=utf-8",
        "image/svg+xml" => "image/svg+xml; charset=utf-8",
        _ => return None,
    };
    Some(with_charset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_extension() {
        let cases: &[(&str, &str)] = &[
            ("index.html", "text/html; charset=utf-8"),
            ("/site/INDEX.HTM", "text/html; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("module.mjs", "application/javascript; charset=utf-8"),
            ("data.json", "application/json; charset=utf-8"),
            ("feed.xml", "text/xml; charset=utf-8"),
            ("logo.svg", "image/svg+xml; charset=utf-8"),
            ("table.csv", "text/csv; charset=utf-8"),
            ("README.md", "text/markdown; charset=utf-8"),
            ("subs.vtt", "text/vtt; charset=utf-8"),
            ("photo.png", "image/png"),
            ("photo.JPG", "image/jpeg"),
            ("app.wasm", "application/wasm"),
            ("archive.tar.gz", "application/gzip"),
            ("doc.pdf", "application/pdf"),
            ("font.woff2", "font/woff2"),
            ("/a.b/noext", "application/octet-stream"),
            ("file.unknownext", "application/octet-stream"),
            ("trailing.", "application/octet-stream"),
            ("", "application/octet-stream"),
            ("/dir/", "application/octet-stream"),
        ];
        for (path, expected) in cases {
            assert_eq!(content_type_for(path), *expected, "{path}");
        }
    }

    #[test]
    fn only_rare_text_types_allocate() {
        let cases: &[(&str, bool)] = &[
            ("index.html", true),
            ("data.json", true),
            ("photo.png", true),
            ("noext", true),
            ("subs.vtt", false),
            ("main.rs", false),
        ];
        for (path, borrowed) in cases {
            let value = content_type_for(path);
            assert_eq!(matches!(value, Cow::Borrowed(_)), *borrowed, "{path}");
        }
    }
}
