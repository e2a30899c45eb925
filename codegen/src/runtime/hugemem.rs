//! f32 buffers backed by transparent huge pages where the OS offers them.
//!
//! A conv reads its input in place across hundreds of channel planes, each kilobytes
//! apart, and streams megabytes of weights: with 4 KiB pages nearly every such load misses
//! the L1 TLB (resnet50 66.3/64.2/70.4 -> 62.0/61.4/63.1 ms on 2 MiB pages, `bnc run
//! examples/resnet50.nn --repeat 30` with old and new binaries alternating), so the
//! weight blob and the workspaces are mapped 2 MiB-aligned and marked `MADV_HUGEPAGE`
//! (Linux; `madvise` mode is the common THP default). Elsewhere, or for small buffers, or
//! if the mapping fails, they are ordinary heap vectors.

use std::ops::{Deref, DerefMut};

/// Below this size a buffer stays on the heap (it would not fill one huge page).
const HUGE_PAGE: usize = 2 << 20;

/// A zero-initialised `[f32]` of fixed length.
pub struct HugeBuf {
    backing: Backing,
    len: usize,
}

enum Backing {
    Heap(Vec<f32>),
    /// An anonymous mapping: `base`/`bytes` as mapped; the data starts at the first 2 MiB
    /// boundary inside it.
    #[cfg(target_os = "linux")]
    Mapped {
        base: usize,
        bytes: usize,
        data: *mut f32,
    },
}

// SAFETY: the buffer exclusively owns its memory (a heap vector or a private mapping), so
// moving or sharing it between threads is as safe as for a `Vec<f32>`.
unsafe impl Send for HugeBuf {}
// SAFETY: shared access only reads (`Deref`); writing needs `&mut`.
unsafe impl Sync for HugeBuf {}

impl HugeBuf {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> HugeBuf {
        HugeBuf::try_zeroed(len).unwrap_or_else(|| panic!("cannot allocate {len} floats"))
    }

    /// `len` zeros, or `None` if the memory is not there.
    pub fn try_zeroed(len: usize) -> Option<HugeBuf> {
        #[cfg(target_os = "linux")]
        if len.saturating_mul(4) >= HUGE_PAGE
            && let Some(b) = map_huge(len)
        {
            return Some(b);
        }
        Some(HugeBuf {
            backing: Backing::Heap(bnc_ir::limits::try_zeros(len)?),
            len,
        })
    }

    /// A copy of `data`.
    pub fn from_slice(data: &[f32]) -> HugeBuf {
        let mut b = HugeBuf::zeroed(data.len());
        b.copy_from_slice(data);
        b
    }
}

#[cfg(target_os = "linux")]
fn map_huge(len: usize) -> Option<HugeBuf> {
    let want = len.checked_mul(4)?;
    let bytes = want.checked_add(HUGE_PAGE)?;
    // SAFETY: a fresh private anonymous mapping (no existing memory is affected); checked
    // for failure below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let base = base as usize;
    let start = base.next_multiple_of(HUGE_PAGE);
    // SAFETY: `[start, start + want)` lies inside the mapping just made. Failure only
    // means 4 KiB pages (e.g. THP disabled), which is still a valid buffer.
    unsafe {
        libc::madvise(start as *mut libc::c_void, want, libc::MADV_HUGEPAGE);
    }
    Some(HugeBuf {
        backing: Backing::Mapped {
            base,
            bytes,
            data: start as *mut f32,
        },
        len,
    })
}

impl Drop for HugeBuf {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Backing::Mapped { base, bytes, .. } = self.backing {
            // SAFETY: the mapping was made by `map_huge` with exactly these bounds and
            // nothing borrows it any more (`self` is being dropped).
            unsafe {
                libc::munmap(base as *mut libc::c_void, bytes);
            }
        }
    }
}

impl Deref for HugeBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.backing {
            Backing::Heap(v) => v,
            // SAFETY: `data` points to `len` zero-initialised (anonymous mapping) f32s that
            // live as long as `self`.
            #[cfg(target_os = "linux")]
            Backing::Mapped { data, .. } => unsafe { std::slice::from_raw_parts(*data, self.len) },
        }
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.backing {
            Backing::Heap(v) => v,
            // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
            #[cfg(target_os = "linux")]
            Backing::Mapped { data, .. } => unsafe {
                std::slice::from_raw_parts_mut(*data, self.len)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_buffers_are_zeroed_and_writable() {
        for len in [0, 5, 3 << 20] {
            let mut b = HugeBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0.0));
            if len > 0 {
                b[len - 1] = 7.0;
                assert_eq!(b[len - 1], 7.0);
            }
        }
        let c = HugeBuf::from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(&c[..], &[1.0, 2.0, 3.0]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_are_mapped_for_huge_pages() {
        // Whether the kernel grants huge pages is its choice (THP mode, fragmentation);
        // what bnc controls is asking for them on a 2 MiB-aligned mapping.
        let b = HugeBuf::zeroed(1 << 20);
        assert!(matches!(b.backing, Backing::Mapped { .. }));
    }
}
