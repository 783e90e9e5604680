//! Bytes in and out of sockets, below every HTTP concern: the transport a connection speaks
//! through, its input buffer and output queue (which may spill to a temporary file), and the
//! worker's pools of spare buffers.
//!
//! Nothing here knows HTTP; `http/`, the handlers and the worker build on it.

pub mod buffers;
mod client_hello;
pub mod input;
#[cfg(test)]
pub mod loopback;
#[cfg(test)]
pub mod memory;
pub mod output;
pub mod spill;
mod stream;
pub mod tls;
pub mod transport;

pub use buffers::{BufferPool, Buffers};
pub use input::{Filled, Input, ReadSide};
pub use output::{FileBody, Flush, Output, SharedBody};
pub use spill::SpillDir;
pub use stream::Stream;
pub use tls::{Client, Tls};
pub use transport::Transport;
