//! A worker's spare I/O buffers, so that idle connections own none and busy ones reuse warm
//! allocations.
//!
//! A connection borrows a buffer only while it holds bytes in it and gives it back as soon
//! as it is empty again (at the end of each drive, and when an exchange ends). Ten thousand
//! idle keep-alive connections therefore cost their connection structs alone, and the heap
//! is not fragmented by thousands of small buffers freed at different times. The pool keeps
//! at most `KEEP` buffers of at most `MAX_KEPT_BYTES` each, so its own memory is bounded.

/// Spare buffers kept at most.
const KEEP: usize = 128;
/// Buffers with more capacity than this are freed instead of kept: one huge response must
/// not pin its memory for the life of the worker.
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// Spare buffers of one kind. Input buffers come back with their length intact (every byte
/// initialised, so reads can land anywhere in them); output buffers come back cleared.
#[derive(Default)]
pub struct BufferPool {
    spare: Vec<Vec<u8>>,
}

impl BufferPool {
    /// A spare buffer, or an empty one (which allocates when first written).
    pub fn take(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// How many spare buffers the pool holds.
    pub fn spare(&self) -> usize {
        self.spare.len()
    }

    /// Keeps `buf` for the next taker, unless the pool is full or `buf` is too big.
    pub fn give(&mut self, buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity > 0 && capacity <= MAX_KEPT_BYTES && self.spare.len() < KEEP {
            self.spare.push(buf);
        }
    }
}

/// The worker's pools: buffers for reading and buffers for writing.
#[derive(Default)]
pub struct Buffers {
    pub input: BufferPool,
    pub output: BufferPool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_what_it_was_given() {
        let mut pool = BufferPool::default();
        let buf = Vec::with_capacity(4096);
        let ptr = buf.as_ptr();
        pool.give(buf);
        let reused = pool.take();
        assert_eq!(reused.as_ptr(), ptr);
        assert_eq!(
            pool.take().capacity(),
            0,
            "an empty pool hands out unallocated buffers"
        );
    }

    #[test]
    fn keeps_a_bounded_number_of_modest_buffers() {
        let mut pool = BufferPool::default();
        pool.give(Vec::with_capacity(MAX_KEPT_BYTES + 1));
        pool.give(Vec::new());
        assert!(pool.spare.is_empty());
        for _ in 0..KEEP + 10 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.spare.len(), KEEP);
    }
}
