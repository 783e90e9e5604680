//! A file's representation: its bytes (in memory or an open file) and the headers that
//! describe exactly those bytes.
//!
//! Headers and content always come from the same open file descriptor, so a file replaced
//! on disk can never be described by one version and served from another.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::time::SystemTime;

use crate::http::conditional;
use crate::http::encoding;
use crate::http::mime;
use crate::http::response;
use crate::sys::{self, Access, OpenMode};

/// Files up to this size are read into memory and cached; larger ones go out with sendfile.
pub const MEMORY_LIMIT_BYTES: u64 = 256 * 1024;

/// A content coding a stored sibling file provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// File-name suffix of a precompressed sibling, and its `Content-Encoding` token.
    pub fn suffix_and_token(self) -> Option<(&'static str, &'static str)> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some((".gz", "gzip")),
            Coding::Brotli => Some((".br", "br")),
        }
    }
}

/// Where the bytes are.
#[derive(Debug)]
pub enum Content {
    Memory(Rc<[u8]>),
    File(Rc<File>),
}

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: SystemTime,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// One servable variant of a resource.
#[derive(Debug)]
pub struct Representation {
    pub identity: Identity,
    pub etag: String,
    /// Headers common to 200/206/304: Content-Type, Last-Modified, ETag, Accept-Ranges,
    /// and Cache-Control / Vary / Content-Encoding when they apply. Each ends in CRLF.
    pub headers: Vec<u8>,
    pub content: Content,
}

/// What opening a path found.
pub enum Opened {
    /// A regular file, opened.
    File(File, std::fs::Metadata),
    /// A directory.
    Directory,
}

/// Why a path could not be served; each maps to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    NotFound,
    Forbidden,
    /// Out of descriptors or memory: a passing condition, worth a retry.
    Unavailable,
    Internal,
}

impl OpenError {
    /// Status code for this failure.
    pub fn status(self) -> u16 {
        match self {
            OpenError::NotFound => 404,
            OpenError::Forbidden => 403,
            OpenError::Unavailable => 503,
            OpenError::Internal => 500,
        }
    }

    fn from_io(e: &io::Error) -> OpenError {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => OpenError::NotFound,
            // EXDEV / ELOOP: resolution tried to leave the root or loop through symlinks;
            // ENXIO: a unix socket (or a device without its driver), never servable.
            Some(libc::EACCES | libc::EPERM | libc::EXDEV | libc::ELOOP | libc::ENXIO | libc::ENODEV) => {
                OpenError::Forbidden
            }
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => OpenError::Unavailable,
            _ => OpenError::Internal,
        }
    }
}

/// Opens `relative` under `root` and says what it is. Its type is looked at through an
/// `O_PATH` probe first, so a FIFO, socket or device node is refused without being opened;
/// a file swapped for one of those between the probe and the open is refused after it.
pub fn open(root: &OwnedFd, relative: &str, mode: OpenMode) -> Result<Opened, OpenError> {
    let opened = |access| {
        let file = sys::open_beneath(root, relative, mode, access).map_err(|e| OpenError::from_io(&e))?;
        let meta = file.metadata().map_err(|e| OpenError::from_io(&e))?;
        Ok((file, meta))
    };
    let (_, probed) = opened(Access::Probe)?;
    if probed.is_dir() {
        return Ok(Opened::Directory);
    }
    if !probed.is_file() {
        return Err(OpenError::Forbidden);
    }
    match opened(Access::Read)? {
        (file, meta) if meta.is_file() => Ok(Opened::File(file, meta)),
        (_, meta) if meta.is_dir() => Ok(Opened::Directory),
        _ => Err(OpenError::Forbidden),
    }
}

/// Everything a representation's headers depend on besides the file itself.
pub struct Describe<'a> {
    /// Name used for the Content-Type (the identity file's name, also for .gz/.br siblings).
    pub name: &'a str,
    pub coding: Coding,
    pub cache_control: Option<&'a str>,
    /// The resource has precompressed siblings, or shoal compresses it: responses vary on
    /// Accept-Encoding.
    pub varies: bool,
}

/// Builds a representation from an open regular file: small files are read whole.
pub fn build(
    mut file: File,
    meta: &std::fs::Metadata,
    describe: &Describe,
) -> Result<Representation, OpenError> {
    let identity = Identity::of(meta);
    let content = if identity.size <= MEMORY_LIMIT_BYTES {
        let mut bytes = Vec::with_capacity(identity.size as usize);
        file.read_to_end(&mut bytes).map_err(|e| OpenError::from_io(&e))?;
        // A file rewritten in place while we read it is not served half old, half new.
        let after = Identity::of(&file.metadata().map_err(|e| OpenError::from_io(&e))?);
        if after != identity || bytes.len() as u64 != identity.size {
            return Err(OpenError::Internal);
        }
        Content::Memory(bytes.into())
    } else {
        Content::File(Rc::new(file))
    };
    let etag = conditional::etag_for(identity.mtime, identity.size);
    Ok(Representation {
        headers: headers(describe, identity.mtime, &etag),
        identity,
        etag,
        content,
    })
}

/// The representation of `source` (an identity in memory) compressed with `coding` by
/// shoal: the same file, so the same modification time; its own entity-tag.
pub fn compressed(
    source: &Representation,
    coding: encoding::Coding,
    describe: &Describe,
) -> Option<Representation> {
    let Content::Memory(bytes) = &source.content else {
        return None;
    };
    let made = encoding::compress(coding, encoding::Effort::Kept, bytes)
        .inspect_err(|e| log::warn!("cannot compress {}: {e}", describe.name))
        .ok()?;
    let identity = Identity {
        size: made.len() as u64,
        ..source.identity
    };
    let etag = format!("{}-{}\"", source.etag.trim_end_matches('"'), coding.token());
    Some(Representation {
        headers: headers(describe, identity.mtime, &etag),
        identity,
        etag,
        content: Content::Memory(made.into()),
    })
}

/// The header lines every answer from a representation carries.
fn headers(describe: &Describe, mtime: SystemTime, etag: &str) -> Vec<u8> {
    let mut headers = Vec::with_capacity(256);
    response::header(
        &mut headers,
        "Content-Type",
        mime::content_type_for(describe.name).as_bytes(),
    );
    response::header(
        &mut headers,
        "Last-Modified",
        httpdate::fmt_http_date(mtime).as_bytes(),
    );
    response::header(&mut headers, "ETag", etag.as_bytes());
    headers.extend_from_slice(b"Accept-Ranges: bytes\r\n");
    if let Some(value) = describe.cache_control {
        response::header(&mut headers, "Cache-Control", value.as_bytes());
    }
    if describe.varies {
        headers.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    if let Some((_, token)) = describe.coding.suffix_and_token() {
        response::header(&mut headers, "Content-Encoding", token.as_bytes());
    }
    headers
}
