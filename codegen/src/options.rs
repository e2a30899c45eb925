//! Compilation options.

use crate::cache::CacheSizes;
use crate::isa::x64::TargetCpu;

/// Compilation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads each kernel's work is split over (1 = run on the calling thread).
    pub threads: usize,
    /// Use `fma` when the ISA has AVX and FMA (default true); false forces fmul + fadd
    /// and, since the assembled microkernels are FMA kernels, the f32x4 fallback GEMM.
    pub allow_fma: bool,
    /// Instruction-set level (default [`TargetCpu::Native`]: the compiling host). For
    /// objects meant to run elsewhere pick a level explicitly (`x86-64-v3` is the portable
    /// choice with wide kernels; see [`emit_object`]).
    pub target_cpu: TargetCpu,
    /// Use the assembled wide GEMM microkernels when `target_cpu` allows them (default
    /// true); false keeps the Cranelift f32x4 fallback with the same ISA flags (for
    /// before/after comparisons).
    pub wide_gemm: bool,
    /// Let AVX-512 convolutions read their input in place instead of packing it (default
    /// true; see `KernelKind::DirectConv`); false packs every conv (im2col), to compare and
    /// to keep that path tested on machines where the direct one applies.
    pub direct_conv: bool,
    /// Fuse affine/batchnorm nodes into the epilogue of the kernel producing their input
    /// (default true); false gives each its own elementwise kernel (an extra read and
    /// write of the tensor), to measure what the fusion saves.
    pub fuse_affine: bool,
    /// Treat denormal (subnormal) inputs and results as zero while the JIT kernels run
    /// (x86 MXCSR FTZ + DAZ on each thread running a kernel, restored after; default true).
    /// Values below ~1.2e-38 then read as 0: a change far below f32 precision for network
    /// outputs, against slowdowns of 10–50× where activations underflow (a squeeze-excitation
    /// gate after random weights). Object files leave the caller's mode alone.
    pub flush_denormals: bool,
    /// Cache sizes the blocking is planned for; `None`: this machine's (CPUID) for the JIT
    /// and `--target-cpu=native` objects, [`CacheSizes::DEFAULT`] for other objects.
    pub cache_sizes: Option<CacheSizes>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threads: 1,
            allow_fma: true,
            target_cpu: TargetCpu::Native,
            wide_gemm: true,
            direct_conv: true,
            fuse_affine: true,
            flush_denormals: true,
            cache_sizes: None,
        }
    }
}
