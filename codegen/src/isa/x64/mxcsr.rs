//! The SSE control register (MXCSR): flush-to-zero and denormals-are-zero while JIT
//! kernels run (see `Options::flush_denormals`).

/// Runs `f` with the SSE control register's flush-to-zero and denormals-are-zero bits set on
/// this thread (when `enabled`), restoring the previous mode afterwards.
pub(crate) fn with_denormals_flushed(enabled: bool, f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    if enabled {
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        let mut old: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write only this thread's SSE control/status
        // register, through pointers to live locals; the previous mode is restored below.
        unsafe {
            std::arch::asm!("stmxcsr [{p}]", p = in(reg) &mut old as *mut u32, options(nostack, preserves_flags));
        }
        let new = old | FTZ_DAZ;
        // SAFETY: as above.
        unsafe {
            std::arch::asm!("ldmxcsr [{p}]", p = in(reg) &new as *const u32, options(nostack, preserves_flags, readonly));
        }
        f();
        // SAFETY: as above.
        unsafe {
            std::arch::asm!("ldmxcsr [{p}]", p = in(reg) &old as *const u32, options(nostack, preserves_flags, readonly));
        }
        return;
    }
    let _ = enabled;
    f();
}
