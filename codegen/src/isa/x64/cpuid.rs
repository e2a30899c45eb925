//! This machine's cache sizes, from CPUID (the planner's blocking is derived from them).

use crate::cache::CacheSizes;

/// L1d and L2 from the deterministic cache parameters: leaf 4 (Intel) or 0x8000001D (AMD),
/// each subleaf one cache: type (1 data, 2 instruction, 3 unified) and level in eax, size
/// = ways * partitions * line size * sets. Sizes outside a plausible range are ignored.
pub(crate) fn caches() -> Option<CacheSizes> {
    use std::arch::x86_64::__cpuid_count;
    // Leaves past each range's maximum are not queried.
    let max = __cpuid_count(0, 0).eax;
    let max_ext = __cpuid_count(0x8000_0000, 0).eax;
    let leaves = [(4, max >= 4), (0x8000_001D, max_ext >= 0x8000_001D)];
    for leaf in leaves.iter().filter(|l| l.1).map(|l| l.0) {
        let (mut l1d, mut l2, mut l2_ways) = (None, None, 16);
        for sub in 0..16 {
            let r = __cpuid_count(leaf, sub);
            let kind = r.eax & 0x1f;
            if kind == 0 {
                break;
            }
            let level = (r.eax >> 5) & 7;
            let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
            let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
            let line = (r.ebx & 0xfff) as usize + 1;
            let sets = r.ecx as usize + 1;
            let size = ways * parts * line * sets;
            match (level, kind) {
                (1, 1 | 3) => l1d = Some(size),
                (2, 2) => {}
                (2, _) => {
                    l2 = Some(size);
                    l2_ways = ways;
                }
                _ => {}
            }
        }
        let l1d = l1d.filter(|s| (8 << 10..=1 << 20).contains(s));
        let l2 = l2.filter(|s| (64 << 10..=64 << 20).contains(s));
        if let (Some(l1d), Some(l2)) = (l1d, l2) {
            return Some(CacheSizes { l1d, l2, l2_ways });
        }
    }
    None
}
