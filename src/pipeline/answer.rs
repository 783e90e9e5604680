//! Answers a route gives by itself: a redirect, or a fixed response.

use crate::config::answer::{Fixed, Parts, Redirect};
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::Length;

/// Answers `redirect`, its `Location` filled in from `parts`.
pub fn redirect(redirect: &Redirect, parts: &Parts, respond: &mut impl Respond) {
    let mut location = Vec::with_capacity(128);
    redirect.to.fill(parts, &mut location);
    respond_simple(respond, redirect.status, &[("Location", &location)]);
}

/// Answers `fixed`.
pub fn fixed(fixed: &Fixed, respond: &mut impl Respond) {
    let head = respond.head();
    head.local(fixed.status);
    head.add(b"Content-Type", fixed.content_type.as_bytes());
    head.length = Length::Known(fixed.body.len() as u64);
    respond.send_head();
    respond.body(BodyPart::Bytes(fixed.body.as_bytes()));
    respond.end();
}
