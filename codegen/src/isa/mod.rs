//! The ISA layer: one folder per architecture, holding everything that knows it (see
//! `docs/design.md` §4 and `docs/adding-a-target.md`).

pub(crate) mod x64;

use crate::cache::CacheSizes;

impl CacheSizes {
    /// This machine's caches (as its ISA layer reads them), or [`CacheSizes::DEFAULT`] when it does not say.
    pub fn host() -> CacheSizes {
        // Asked once per process (on x86, up to 32 CPUID queries, each a trap to the
        // hypervisor in a VM).
        static HOST: std::sync::OnceLock<CacheSizes> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| x64::host_caches().unwrap_or(CacheSizes::DEFAULT))
    }
}
