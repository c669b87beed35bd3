//! The read-ahead buffer of a `SocketReader`.
//!
//! Its memory comes from the allocator uninitialised, as the io module's
//! buffers do: an idle connection's buffer then costs only the pages that
//! data has reached.  (Zeroed memory is no substitute: the allocator clears
//! reused memory by writing to it, which makes every page resident.)  The
//! bytes below `filled` have been written by a receive; only they can be
//! read.

use std::mem::MaybeUninit;
use std::ops::{Index, Range, RangeTo};

pub struct ReadBuf {
    mem: Box<[MaybeUninit<u8>]>,
    filled: usize,
}

impl ReadBuf {
    /// A buffer of `len` bytes; None when the memory cannot be had.
    pub fn new(len: usize) -> Option<Self> {
        let mut mem = Vec::new();
        mem.try_reserve_exact(len).ok()?;
        // SAFETY: the capacity is at least `len`, and MaybeUninit needs no
        // initialisation.
        unsafe { mem.set_len(len) };
        Some(ReadBuf {
            mem: mem.into_boxed_slice(),
            filled: 0,
        })
    }

    /// The buffer of an unbuffered or closed reader.
    pub fn empty() -> Self {
        ReadBuf {
            mem: Box::new([]),
            filled: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// Where a receive into `self[start..]` writes; `start <= len()`.
    pub fn spare_mut(&mut self, start: usize) -> &mut [MaybeUninit<u8>] {
        &mut self.mem[start..]
    }

    /// Records that bytes up to `end` have been written through `spare_mut`.
    pub fn mark_filled(&mut self, end: usize) {
        assert!(end <= self.mem.len(), "filled past the buffer's end");
        self.filled = self.filled.max(end);
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        assert!(range.end <= self.filled, "read past the received bytes");
        let part = &self.mem[range];
        // SAFETY: every byte below `filled` was written by a receive, and
        // MaybeUninit<u8> has the layout of u8.
        unsafe { std::slice::from_raw_parts(part.as_ptr().cast(), part.len()) }
    }
}

impl Index<Range<usize>> for ReadBuf {
    type Output = [u8];

    fn index(&self, range: Range<usize>) -> &[u8] {
        self.bytes(range)
    }
}

impl Index<RangeTo<usize>> for ReadBuf {
    type Output = [u8];

    fn index(&self, range: RangeTo<usize>) -> &[u8] {
        self.bytes(0..range.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(buf: &mut ReadBuf, start: usize, data: &[u8]) {
        for (slot, &byte) in buf.spare_mut(start).iter_mut().zip(data) {
            slot.write(byte);
        }
        buf.mark_filled(start + data.len());
    }

    #[test]
    fn reads_what_was_received() {
        let mut buf = ReadBuf::new(16).unwrap();
        receive(&mut buf, 0, b"hello");
        receive(&mut buf, 5, b" world");
        assert_eq!(&buf[0..11], b"hello world");
        assert_eq!(&buf[..5], b"hello");
        // Refilling from the start keeps the high-water mark.
        receive(&mut buf, 0, b"HE");
        assert_eq!(&buf[..11], b"HEllo world");
    }

    #[test]
    #[should_panic(expected = "read past the received bytes")]
    fn never_reads_unreceived_memory() {
        let mut buf = ReadBuf::new(16).unwrap();
        receive(&mut buf, 0, b"abc");
        let _ = &buf[0..4];
    }

    #[test]
    fn sizes() {
        assert_eq!(ReadBuf::new(8192).unwrap().len(), 8192);
        assert!(ReadBuf::empty().is_empty());
        assert!(ReadBuf::new(usize::MAX).is_none());
    }
}
