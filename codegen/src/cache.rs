//! Per-core data cache sizes, which the conv and GEMM blocking is derived from.
//!
//! The JIT (and an object for `--target-cpu=native`) plans for the machine it runs on,
//! read from CPUID; an object for a named x86-64 level plans for [`CacheSizes::DEFAULT`].
//! On this machine (48 KiB L1d, 2 MiB L2) planning with its own sizes instead of the
//! defaults took resnet50 from 59.1 to 58.0 ms (mean of 5 alternating medians of
//! `bnc run examples/resnet50.nn --repeat 40`).

/// Sizes in bytes of one core's L1 data cache and L2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub l1d: usize,
    pub l2: usize,
    /// L2 associativity (ways).
    pub l2_ways: usize,
}

impl CacheSizes {
    /// Assumed for a machine that cannot be asked (a common x86-64 core of the last decade).
    pub const DEFAULT: CacheSizes = CacheSizes {
        l1d: 32 * 1024,
        l2: 1024 * 1024,
        l2_ways: 16,
    };

    /// Floats of one packed (or in-place) input block of the GEMM path: the block is
    /// reused by every weight panel, so it should stay in L2 next to the streaming
    /// weights (half of L2).
    pub(crate) fn pack_budget(&self) -> usize {
        self.l2 / 2 / 4
    }

    /// Floats of one pixel block of a conv read in place when the image does not fit
    /// (a quarter of L2): every m-tile of the block reads it, next to the weights and
    /// outputs of those m-tiles. resnet50's 1x1 convs on 56x56 x 256 inputs ran ~5 %
    /// faster than with half of L2 (kernel sums 51.0/52.1/52.4 against 51.7/53.2/52.3 ms,
    /// alternating `profile` runs).
    pub(crate) fn in_place_budget(&self) -> usize {
        self.l2 / 4 / 4
    }

    /// The larger budget (3/4 of L2) allowed when the block covers the whole image.
    pub(crate) fn whole_budget(&self) -> usize {
        self.l2 * 3 / 4 / 4
    }

    /// The most reduction steps one chunk may take when consecutive steps read rows
    /// `stride` bytes apart: beyond it more than half of an L2 set's ways would hold the
    /// chunk's rows. Power-of-two strides fold onto few sets: a 1024x1024x1024 GEMM (a 1x1
    /// conv on a 1x1024 image, rows 4 KiB apart) ran at 71-77 GFLOP/s in chunks of 512
    /// steps and 143-155 in chunks of 128-344 (`bench_gemm`).
    pub(crate) fn alias_steps(&self, stride: usize) -> usize {
        let sets = (self.l2 / 64 / self.l2_ways.max(1)).max(1);
        let lines = (stride / 64) % sets;
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        // Rows r and r + period start in the same set.
        let period = sets / gcd(lines, sets);
        period * (self.l2_ways / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_two_strides_limit_chunks() {
        let c = CacheSizes {
            l1d: 48 << 10,
            l2: 2 << 20,
            l2_ways: 16,
        };
        // 2048 sets: rows 4 KiB apart repeat their set every 32 rows.
        assert_eq!(c.alias_steps(4096), 32 * 8);
        assert_eq!(c.alias_steps(1 << 20), 8);
        // 56x56 planes (196 lines) cycle through 512 set offsets.
        assert_eq!(c.alias_steps(3136 * 4), 512 * 8);
        assert_eq!(c.alias_steps(49 * 4), 2048 * 8);
    }

    /// The host's sizes agree with what Linux reports in sysfs (from the same CPUID
    /// leaves, when the kernel exposes them).
    #[test]
    fn host_caches_match_sysfs() {
        let c = CacheSizes::host();
        assert!(c.l1d >= 8 << 10 && c.l2 >= c.l1d, "{c:?}");
        let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!("SKIPPED: no {}", dir.display());
            return;
        };
        let read = |p: &std::path::Path, f: &str| {
            std::fs::read_to_string(p.join(f)).map(|s| s.trim().to_string())
        };
        let mut compared = 0;
        for e in entries.flatten() {
            let p = e.path();
            let (Ok(level), Ok(kind), Ok(size)) =
                (read(&p, "level"), read(&p, "type"), read(&p, "size"))
            else {
                continue;
            };
            let Some(kib) = size.strip_suffix('K').and_then(|k| k.parse::<usize>().ok()) else {
                continue;
            };
            match (level.as_str(), kind.as_str()) {
                ("1", "Data") => assert_eq!(c.l1d, kib << 10, "L1d"),
                ("2", "Unified") => {
                    assert_eq!(c.l2, kib << 10, "L2");
                    if let Ok(ways) = read(&p, "ways_of_associativity") {
                        assert_eq!(c.l2_ways.to_string(), ways, "L2 ways");
                    }
                }
                _ => continue,
            }
            compared += 1;
        }
        if compared == 0 {
            eprintln!("SKIPPED: sysfs lists no L1d or L2 entry to compare with");
        }
    }
}
