//! The ISA layer: one folder per architecture, holding everything that knows it (see
//! `docs/design.md` §4 and `docs/adding-a-target.md`).

pub(crate) mod x64;

use crate::cache::CacheSizes;

impl CacheSizes {
    /// This machine's caches (CPUID), or [`CacheSizes::DEFAULT`] when it does not say.
    pub fn host() -> CacheSizes {
        // Asked once per process (up to 32 `cpuid`s, each a trap to the hypervisor in a VM).
        static HOST: std::sync::OnceLock<CacheSizes> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if let Some(c) = crate::isa::x64::cpuid::caches() {
                return c;
            }
            CacheSizes::DEFAULT
        })
    }
}
