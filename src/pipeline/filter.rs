//! Filters: request filters run after routing and may answer instead of the handler (access
//! rules, rate limits, auth); response filters see every response's head and body on the
//! way to the client (header rules, compression).
//!
//! None exists yet. The lists are in place (on each route, on each response) and the types
//! have no variants, so the first filter added makes the compiler point at every place that
//! must run it.

use crate::http::respond::Respond;
use crate::http::response::ResponseHead;

use super::Request;

/// What a request filter decided.
pub enum Verdict {
    /// The request goes on to the next filter, then the handler.
    Pass,
    /// The filter answered the request itself.
    Answered,
}

/// A check a route runs on its requests before the handler.
pub enum RequestFilter {}

impl RequestFilter {
    /// Lets `request` through, or answers it through `respond`.
    pub fn check(&self, _request: &Request, _respond: &mut impl Respond) -> Verdict {
        match *self {}
    }
}

/// A change a route makes to its responses on their way out.
pub enum ResponseFilter {}

impl ResponseFilter {
    /// Sees (and may change) the head before it is sent.
    pub fn head(&mut self, _head: &mut ResponseHead) {
        match *self {}
    }
}
