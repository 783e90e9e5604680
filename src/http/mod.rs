//! HTTP/1.x wire format: request heads and targets, body framing, response heads as values
//! and their serialisation, and the sink handlers answer through.

pub mod chunked;
pub mod conditional;
pub mod encoding;
pub mod hop;
pub mod mime;
pub mod range;
pub mod request;
pub mod respond;
pub mod response;
pub mod selection;
pub mod target;
