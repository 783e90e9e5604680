//! HTTP/1.x wire format: request heads, body framing, response heads.

pub mod chunked;
pub mod hop;
pub mod request;
pub mod response;
pub mod target;
