//! Static files: a path beneath a root to a response, with conditional and range requests,
//! MIME types, precompressed siblings and a cache.
//!
//! [`StaticFiles`] answers GET and HEAD for the routes that have a `root`. Paths arrive
//! already decoded and normalized (`http::target`); the kernel then keeps every open
//! beneath the root (`openat2`), so no request can reach a file outside it.

mod cache;
mod representation;
mod respond;

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use crate::config::{Dotfiles, FileOptions};
use crate::http::encoding;
use crate::http::request::{Method, RequestHead};
use crate::http::respond::{respond_simple, Respond};
use crate::http::target;
use crate::sys::{self, OpenMode};
use cache::{FileCache, Lookup, Resource};
use representation::{Coding, Describe, OpenError, Opened};

/// One request for a static file, as the pipeline hands it over.
pub struct FileRequest<'a> {
    pub head: &'a RequestHead,
    /// The buffer the head's slices point into.
    pub buf: &'a [u8],
    /// Decoded, normalized path (starts with '/').
    pub path: &'a str,
    /// What of `path` lies beneath the root (the route's prefix stripped, if it strips it).
    pub relative: &'a str,
    /// Index of the route's root in the `StaticFiles` it was opened with.
    pub root: usize,
    pub options: &'a FileOptions,
}

struct Root {
    dir: OwnedFd,
    mode: OpenMode,
    cache: FileCache,
}

/// A worker's static file handler: one open root directory and cache per route.
pub struct StaticFiles {
    roots: Vec<Root>,
}

/// How a static route answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A response was sent.
    Served,
    /// Nothing was sent: the route's fallback upstream (this index) answers instead.
    Fallback(usize),
}

/// The outcome of finding what a path names.
enum Found {
    Resource(Resource),
    /// A directory named without its trailing slash.
    Redirect,
}

impl StaticFiles {
    /// Opens every file route's root directory (route ids are positions in `routes`).
    pub fn open(routes: &[&FileOptions]) -> std::io::Result<StaticFiles> {
        let roots = routes
            .iter()
            .map(|route| {
                let dir = sys::open_dir(&route.root).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot open root {}: {e}", route.root.display()),
                    )
                })?;
                let mode = if route.follow_symlinks {
                    OpenMode::FollowAll
                } else {
                    OpenMode::Beneath
                };
                Ok(Root {
                    dir,
                    mode,
                    cache: FileCache::default(),
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(StaticFiles { roots })
    }

    /// Answers `request` through `respond`, unless the route has a `fallback` and no file
    /// answers (missing, or not GET/HEAD): then nothing is sent and the request goes to that
    /// upstream.
    pub fn serve(&mut self, request: &FileRequest, respond: &mut impl Respond, now: Instant) -> Answer {
        let fallback = request.options.fallback;
        let head = request.head;
        if !matches!(head.method, Method::Get | Method::Head) {
            return match fallback {
                Some(upstream) => Answer::Fallback(upstream),
                None => {
                    respond_simple(respond, 405, &[("Allow", b"GET, HEAD")]);
                    Answer::Served
                }
            };
        }
        if request.options.dotfiles != Dotfiles::Allow && target::has_dot_segment(request.path) {
            let status = if request.options.dotfiles == Dotfiles::Deny {
                403
            } else {
                404
            };
            respond_simple(respond, status, &[]);
            return Answer::Served;
        }
        let resource = match self.find(request.root, request.relative, request.options, now) {
            Ok(Found::Resource(resource)) => resource,
            Ok(Found::Redirect) => {
                let location = redirect_location(head.target.of(request.buf), request.path);
                respond_simple(respond, 301, &[("Location", &location)]);
                return Answer::Served;
            }
            Err(e) => {
                if let (OpenError::NotFound, Some(upstream)) = (e, fallback) {
                    return Answer::Fallback(upstream);
                }
                respond_simple(respond, e.status(), &[]);
                return Answer::Served;
            }
        };
        let offered = encoding::CODINGS.map(|coding| resource.offers(coding).then_some(coding));
        let offered: Vec<_> = offered.into_iter().flatten().collect();
        let accepted = head.field(request.buf, "accept-encoding");
        let chosen = encoding::choose(accepted, &offered).coding;
        let rep = chosen
            .and_then(|coding| resource.encoded(coding))
            .unwrap_or(&resource.identity);
        respond::respond(rep, head, request.buf, respond);
        Answer::Served
    }

    /// Finds the resource for `relative`, from the cache when it is fresh.
    fn find(
        &mut self,
        route_id: usize,
        relative: &str,
        route: &FileOptions,
        now: Instant,
    ) -> Result<Found, OpenError> {
        let root = &mut self.roots[route_id];
        let stale = match root.cache.get(relative, now) {
            Lookup::Fresh(resource) => return Ok(Found::Resource(resource.clone())),
            Lookup::Stale(resource) => Some(resource.clone()),
            Lookup::Missing => None,
        };
        let found = load(root, relative, route)?;
        if let Found::Resource(resource) = &found {
            match stale {
                Some(old) if old.fingerprint() == resource.fingerprint() => root.cache.confirm(relative, now),
                _ => root
                    .cache
                    .insert(relative, resource.clone(), now, cache::BUDGET_BYTES),
            }
        } else {
            root.cache.remove(relative);
        }
        Ok(found)
    }
}

/// Reads what `relative` names from disk: a file, a directory's index, or a redirect.
fn load(root: &Root, relative: &str, route: &FileOptions) -> Result<Found, OpenError> {
    let wants_directory = relative.is_empty() || relative.ends_with('/');
    if !wants_directory {
        return match representation::open(&root.dir, relative, root.mode)? {
            Opened::File(file, meta) => resource(root, relative, file, &meta, route).map(Found::Resource),
            Opened::Directory => Ok(Found::Redirect),
        };
    }
    for index in &route.index {
        let path = format!("{relative}{index}");
        match representation::open(&root.dir, &path, root.mode) {
            Ok(Opened::File(file, meta)) => {
                return resource(root, &path, file, &meta, route).map(Found::Resource)
            }
            Ok(Opened::Directory) | Err(OpenError::NotFound) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(OpenError::NotFound)
}

/// Builds the resource for the regular file at `path`, with its precompressed siblings.
fn resource(
    root: &Root,
    path: &str,
    file: std::fs::File,
    meta: &std::fs::Metadata,
    route: &FileOptions,
) -> Result<Resource, OpenError> {
    let sibling = |coding: Coding| {
        let (suffix, _) = coding.suffix_and_token()?;
        match representation::open(&root.dir, &format!("{path}{suffix}"), root.mode) {
            Ok(Opened::File(file, meta)) => Some((file, meta)),
            _ => None,
        }
    };
    let gzip = sibling(Coding::Gzip);
    let brotli = sibling(Coding::Brotli);
    // Shoal compresses what it keeps in memory, once (a larger file goes out with sendfile,
    // as it is: see docs/performance.md).
    let makes = route.compress.as_ref().filter(|rules| {
        let content_type = crate::http::mime::content_type_for(path);
        meta.len() <= representation::MEMORY_LIMIT_BYTES
            && meta.len() >= rules.min_bytes
            && encoding::compressible(content_type.as_bytes(), &rules.types)
    });
    let varies = gzip.is_some() || brotli.is_some() || makes.is_some();
    let describe = |coding| Describe {
        name: path,
        coding,
        cache_control: route.cache_control.as_deref(),
        varies,
    };
    let build = |found: Option<(std::fs::File, std::fs::Metadata)>, coding| {
        found
            .map(|(file, meta)| representation::build(file, &meta, &describe(coding)).map(Rc::new))
            .transpose()
    };
    let made = makes.map(|_| {
        Rc::new(cache::Made {
            name: path.into(),
            cache_control: route.cache_control.as_deref().map(Into::into),
            forms: Default::default(),
        })
    });
    Ok(Resource {
        identity: Rc::new(representation::build(file, meta, &describe(Coding::Identity))?),
        gzip: build(gzip, Coding::Gzip)?,
        brotli: build(brotli, Coding::Brotli)?,
        made,
    })
}

/// `Location` for a directory named without its slash: the same target with '/' added
/// before the query.
fn redirect_location(target: &[u8], normalized: &str) -> Vec<u8> {
    if !target.starts_with(b"/") {
        return format!("{normalized}/").into_bytes();
    }
    let split = target::query_start(target);
    let mut location = target[..split].to_vec();
    location.push(b'/');
    location.extend_from_slice(&target[split..]);
    location
}
