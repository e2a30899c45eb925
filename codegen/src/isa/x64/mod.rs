//! Everything that knows x86-64: the instruction-set levels ([`TargetCpu`]), the Cranelift
//! flags and microkernel family each level allows, the microkernels assembled with
//! `iced-x86` (`asm`), the cache sizes read with CPUID (`cpuid`) and the SSE control
//! register (`mxcsr`). The planner sees none of it: it gets a [`TargetCaps`] from
//! [`caps`], and the kernels it plans name a target-neutral [`Vector`].

pub(crate) mod asm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod cpuid;
pub(crate) mod mxcsr;

use std::fmt;

use cranelift_codegen::isa::{CallConv, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};

use crate::cache::CacheSizes;
use crate::error::{CodegenError, backend};
use crate::target::TargetCaps;
use crate::ukernel::Vector;

/// The x86-64 instruction-set level generated code may use.
///
/// | level        | Cranelift ISA flags                       | conv/GEMM microkernel        |
/// |--------------|-------------------------------------------|------------------------------|
/// | `x86-64-v2`  | SSE4.2, POPCNT (no AVX, no FMA)            | Cranelift f32x4 8x4 (fallback)|
/// | `x86-64-v3`  | + AVX, AVX2, FMA, BMI1/2, LZCNT            | assembled AVX2+FMA 4x24      |
/// | `x86-64-v4`  | + AVX-512 F/DQ/VL                          | assembled AVX-512F 12x32     |
/// | `native`     | whatever the compiling host has            | the widest the host supports |
/// | `multi`      | x86-64-v2 for the Cranelift code           | all three, chosen at run time|
///
/// The JIT ([`compile`]) runs on the host, so a level above the host's is an error there;
/// [`emit_object`] accepts any level. `multi` is for objects only: the object holds the
/// model three times (fallback, AVX2, AVX-512 microkernels and their packed weights) and
/// `<p>_forward` picks one with `cpuid`/`xgetbv` on each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetCpu {
    X86_64V2,
    X86_64V3,
    X86_64V4,
    #[default]
    Native,
    Multi,
}

impl TargetCpu {
    pub const ALL: [TargetCpu; 5] = [
        TargetCpu::X86_64V2,
        TargetCpu::X86_64V3,
        TargetCpu::X86_64V4,
        TargetCpu::Native,
        TargetCpu::Multi,
    ];
    /// The name used on the command line (`x86-64-v3`, `native`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TargetCpu::X86_64V2 => "x86-64-v2",
            TargetCpu::X86_64V3 => "x86-64-v3",
            TargetCpu::X86_64V4 => "x86-64-v4",
            TargetCpu::Native => "native",
            TargetCpu::Multi => "multi",
        }
    }
    /// Whether the machine running this code can execute code for this level.
    pub fn host_supports(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v2 = has!("sse4.2") && has!("popcnt");
            let v3 = v2 && has!("avx") && has!("avx2") && has!("fma") && has!("bmi2");
            match self {
                TargetCpu::X86_64V2 => v2,
                TargetCpu::X86_64V3 => v3,
                TargetCpu::X86_64V4 => {
                    v3 && has!("avx512f") && has!("avx512dq") && has!("avx512vl")
                }
                TargetCpu::Native | TargetCpu::Multi => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == TargetCpu::Native
        }
    }
}

impl fmt::Display for TargetCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TargetCpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TargetCpu::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown target cpu `{s}` (expected x86-64-v2, x86-64-v3, x86-64-v4, native or multi)"
                )
            })
    }
}

/// Instruction set of a wide microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX2 + FMA, 16 ymm registers.
    Avx2,
    /// AVX-512F, 32 zmm registers and mask registers.
    Avx512,
}

impl Isa {
    /// The target-neutral description of this family (see [`Vector`]).
    pub fn vector(self) -> Vector {
        Vector {
            name: self.name(),
            vl: self.vl(),
            mr: self.mr(),
            nv: self.nv(),
            masks: self == Isa::Avx512,
            act: true,
        }
    }
    /// The family a [`Vector`] of the x64 layer stands for.
    pub fn of(v: &Vector) -> Isa {
        match v.vl {
            8 => Isa::Avx2,
            16 => Isa::Avx512,
            vl => panic!("no x86-64 microkernels with {vl} lanes"),
        }
    }
    /// f32 lanes per vector.
    pub fn vl(self) -> usize {
        match self {
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }
    /// Full tile rows (output channels; broadcast operand).
    pub fn mr(self) -> usize {
        match self {
            Isa::Avx2 => 4,
            Isa::Avx512 => 12,
        }
    }
    /// Vectors per tile row (the tile has `nv * vl` pixel columns).
    pub fn nv(self) -> usize {
        match self {
            Isa::Avx2 => 3,
            Isa::Avx512 => 2,
        }
    }
    pub fn nr(self) -> usize {
        self.vl() * self.nv()
    }
    pub(crate) fn regs(self) -> usize {
        match self {
            Isa::Avx2 => 16,
            Isa::Avx512 => 32,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// The Cranelift ISA for `target` (speed optimisation) and the vector family of the
/// assembled microkernels it allows (none without AVX2 and FMA).
pub(crate) fn target_isa(
    target: TargetCpu,
    pic: bool,
    allow_fma: bool,
) -> Result<(OwnedTargetIsa, Option<Vector>), CodegenError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(backend)?;
    flags
        .set("is_pic", if pic { "true" } else { "false" })
        .map_err(backend)?;
    let mut isa = match target {
        TargetCpu::Native => cranelift_native::builder().map_err(backend)?,
        TargetCpu::Multi => {
            return Err(CodegenError::Unsupported(
                "`multi` is for object files (--emit=obj); the JIT compiles for this machine"
                    .into(),
            ));
        }
        _ => cranelift_native::builder_with_options(false).map_err(backend)?,
    };
    let extra: &[&str] = match target {
        TargetCpu::Native | TargetCpu::Multi => &[],
        TargetCpu::X86_64V2 => &["x86-64-v2"],
        // The v3/v4 presets leave `has_avx` (and v4 `has_avx512f`) off; both levels have them.
        TargetCpu::X86_64V3 => &["x86-64-v3", "has_avx"],
        TargetCpu::X86_64V4 => &["x86-64-v4", "has_avx", "has_avx512f"],
    };
    for e in extra {
        isa.enable(e).map_err(backend)?;
    }
    let isa = isa.finish(settings::Flags::new(flags)).map_err(backend)?;
    let on = |name: &str| isa_flag(&*isa, name);
    let sysv = isa.default_call_conv() == CallConv::SystemV;
    let fma = allow_fma && on("has_avx") && on("has_fma");
    let wide = if !sysv || !fma || isa.name() != "x64" {
        None
    } else if on("has_avx512f") {
        Some(Isa::Avx512.vector())
    } else if on("has_avx2") {
        Some(Isa::Avx2.vector())
    } else {
        None
    };
    Ok((isa, wide))
}

fn isa_flag(isa: &dyn cranelift_codegen::isa::TargetIsa, name: &str) -> bool {
    isa.isa_flags()
        .iter()
        .any(|v| v.name == name && v.as_bool().unwrap_or(false))
}

/// Whether `fma` lowers to a real instruction on this ISA (has_avx and has_fma).
pub(crate) fn isa_has_fma(isa: &dyn cranelift_codegen::isa::TargetIsa) -> bool {
    isa_flag(isa, "has_avx") && isa_flag(isa, "has_fma")
}

/// What the planner may use with the microkernel family `wide` (`None`: the portable
/// Cranelift kernels only): AVX-512 adds the kernels that read convs and pools in place.
pub(crate) fn caps(wide: Option<Vector>, caches: CacheSizes) -> TargetCaps {
    let masks = wide.is_some_and(|v| v.masks);
    TargetCaps {
        wide,
        pool_row_floats: if masks { asm::POOL_MAX_VECTORS * 16 } else { 0 },
        pad_row_floats: if masks { asm::PAD_MAX_VECTORS * 16 } else { 0 },
        caches,
    }
}

/// The variants a `multi` object holds: x86-64 level and microkernel family (with
/// `wide_gemm: false`, the fallback alone).
pub(crate) fn multi_variants(wide_gemm: bool) -> Vec<(u32, Option<Vector>)> {
    let mut v = vec![(2, None)];
    if wide_gemm {
        v.push((3, Some(Isa::Avx2.vector())));
        v.push((4, Some(Isa::Avx512.vector())));
    }
    v
}

/// This machine's cache sizes, if CPUID says.
pub(crate) fn host_caches() -> Option<CacheSizes> {
    #[cfg(target_arch = "x86_64")]
    {
        cpuid::caches()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}
