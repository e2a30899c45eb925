//! The contract between the planner, the Cranelift lowering and the assembled
//! microkernels of an ISA layer (`isa/<arch>/`): which kernel to assemble ([`Spec`]), the
//! epilogue it applies ([`EpOp`]), and what it computes. Nothing here names an instruction
//! set: a [`Vector`] says how wide a family's vectors and tiles are, and the ISA layer maps
//! it to instructions (on x86-64, `isa/x64/asm.rs`: AVX2+FMA and AVX-512F).
//!
//! # The GEMM/conv microkernel
//!
//! ```text
//! ukernel(w:   *const f32   rdi  weight micro-panel [k*T][mr]        (broadcast, any alignment)
//!         x:   *const f32   rsi  input: step s, tap t, column j at x[s*xstride + taps[t] + j]
//!                                (vector loads; 64-byte aligned is best), columns 0 .. nv*VL
//!         c:   *mut f32     rdx  tile origin: row r at c + r*ldc bytes, columns contiguous
//!         k:   u64          rcx  >= 1, reduction steps (each of the T = taps.len() taps)
//!         ldc: i64          r8   row stride of C (and of the residual) in bytes
//!         ep:  *const u64   r9   ep[0] = valid columns n (masked variants only),
//!                                ep[E + s] = pointer of epilogue slot s, for row 0 of the tile,
//!                                E = 1, 2 with `tap_masks` (ep[1]: the masks),
//!                                or [`Remap::slots_at`] with `remap`)
//!
//! acc[r][j] = (accumulate ? c[r][j] : 0)
//!             + sum_{s in 0..k, t in 0..T, in order} w[s*T + t][r] * x[s*xstride + taps[t] + j]
//! then the epilogue ops in order, then c[r][j] = acc[r][j] for r < mr, j < n
//! ```
//!
//! With one tap at 0 the input is a packed panel or a strided matrix (a 1x1 convolution
//! read in place, `xstride` = pixels); with several taps it is a padded image read in place
//! by a stride-1 convolution (`taps` = the kernel window's offsets, `xstride` = one
//! channel plane). With `tap_masks` the image is not padded: taps may be negative and a
//! lane whose tap falls outside the image skips that tap's terms.
//!
//! Every element is one FMA chain in `(s, t)` order (tap masks leave out terms, never
//! reorder them), so the result is independent of how the caller tiles M and N, and a K-blocked caller (first block without, later blocks with
//! `accumulate`) gets exactly the unblocked sums. The epilogue ops reproduce the Cranelift
//! epilogue bit for bit (`fma(v, scale, shift)`, `v + shift`, `v * scale`, `v + res`,
//! `max`/`min` with the same NaN rule as `x > lo ? x : lo`).
//!
//! Variants: `mr` in `1..=MR` rows (the M edge is a narrower kernel, not padding), `nv` in
//! `1..=NV` vectors of VL columns, and `masked` (only the last vector is partial: `n` in
//! `((nv-1)*VL, nv*VL]`; masked loads and stores never touch the columns past `n`; the
//! AVX-512 variants also mask the input loads of the last vector, so an in-place input is
//! never read past its last valid column; AVX2 variants read whole vectors of the input).
//!
//! `remap` (AVX-512, `nv` <= 2, not `masked`): the tile's columns are positions of a grid
//! whose rows carry `gap` garbage columns that the output does not have (a convolution
//! computed on its padded input's row pitch). Vector `j`'s lanes belong to at most `pieces`
//! grid rows: lanes in mask `M_{j,b}` go to `c + j*64 + 4*lane + off_j - b*gap`, other
//! lanes nowhere (the residual and accumulated C are read the same way). `ep[1 + j] = off_j`
//! (bytes); the masks are u16s from byte 24 of `ep`, `M_{j,b}` at index `j*pieces + b`.
//!
//! The k loop prefetches the weight stream [`PREFETCH_STEPS`] reduction rows ahead: the
//! first tile to use a weight panel reads it from L2 or memory (later tiles of the block
//! find it in L1), and a broadcast that misses stalls every FMA of its row (measured:
//! resnet50 78 -> 70 ms of kernel time).

/// One step of a fused epilogue, applied to every accumulator of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpOp {
    /// `v = fma(v, scale[r], shift[r])`; slots of the two per-row vectors.
    ScaleShift(u8, u8),
    /// `v = v * scale[r]`.
    Scale(u8),
    /// `v = v + shift[r]`.
    Shift(u8),
    /// `v = v + res[r][j]`; the slot holds the residual tile origin (row stride `ldc`).
    /// At most one per kernel.
    AddRows(u8),
    /// `v = v > c ? v : c` (f32 bits).
    Max(u32),
    /// `v = v < c ? v : c` (f32 bits).
    Min(u32),
    /// Only where [`Vector::masks`] (AVX-512 on x64): `v = f(v)` with the same operation sequence as the Cranelift
    /// epilogue (`Em::act`), so results match it bit for bit on finite inputs.
    Act(ActOp),
}

/// Activations the assembled epilogues compute (see [`EpOp::Act`], [`Vector::act`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActOp {
    Sigmoid,
    Silu,
    Tanh,
    HardSigmoid,
    HardSwish,
}

/// Per-tap lane masks of a zero-padded convolution read from its unpadded input (taps may
/// be negative): a lane outside tap `t`'s mask skips that tap's FMAs (its accumulator
/// keeps its value, as if it had added a zero tap from the padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TapMasks {
    Off,
    /// Only the FMAs are masked; the input loads are whole vectors, so the caller
    /// guarantees every tap of the tile reads mapped memory (an interior tile: masked
    /// loads cost ~8 % of the kernel's speed).
    Fmas,
    /// The loads are masked too (zeroing): no lane outside a mask touches memory (tiles
    /// at the image's top and bottom, and the last, partial one).
    FmasAndLoads,
    /// As `Fmas`, for a tile whose masks depend on the tap's column only (every window
    /// row inside the image): the masks of taps `0..kw` (`kw` <= 3, taps in row-major
    /// window order) are loaded into k2..k7 once, and tap `t` uses those of `t % kw`.
    FmasByColumn(u8),
}

/// A remapped tile's grid (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Remap {
    /// Garbage bytes per grid row.
    pub gap: i32,
    /// Grid rows one vector may span (2 or 3: mask registers k2..k7 hold 2 vectors' masks).
    pub pieces: usize,
}

impl Remap {
    /// Index in `ep` of the first epilogue slot (after offsets and masks).
    pub fn slots_at(&self) -> usize {
        3 + (2 * 2 * self.pieces).div_ceil(8)
    }
}

/// Which microkernel to assemble.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    pub vector: Vector,
    pub mr: usize,
    pub nv: usize,
    pub masked: bool,
    /// Start from the values in C (K-blocking) instead of zero.
    pub accumulate: bool,
    /// Floats between reduction steps of the input.
    pub xstride: usize,
    /// Offsets (floats) of the taps within one reduction step; `[0]` for a plain GEMM.
    pub taps: Vec<i32>,
    /// Row map of a tile on a grid with garbage columns (see the module documentation).
    pub remap: Option<Remap>,
    /// A channel-vectorised kernel (see `chanvec.rs`): `mr` pixels, `nv` vectors of
    /// output channels.
    pub chanvec: bool,
    /// Input offsets (floats) of a channel-vectorised tile's pixels; empty otherwise.
    pub xoffs: Vec<i32>,
    /// Channel-vectorised only: store the sums to the partial-sum tile, no epilogue.
    pub partial: bool,
    /// Per-tap lane masks (AVX-512, no `remap`), see [`TapMasks`]: `ep[1]` points to the
    /// tile's masks, u16 `masks[2 * t + j]` for tap `t`, vector `j`. Epilogue slots then
    /// start at `ep[2]`.
    pub tap_masks: TapMasks,
    /// Prefetch (to L2) the input of the tile `PREFETCH_TILES` tiles to the right, for
    /// an input read in place: the first weight panel to reach a block of a large input
    /// finds it in L3, and its hundreds of plane-strided streams defeat the hardware
    /// prefetchers.
    pub prefetch_x: bool,
    pub ops: Vec<EpOp>,
    /// Not a GEMM tile but a row kernel (AVX-512); the fields above are then unused.
    pub rows: Option<RowKernel>,
}

/// Assembled kernels that move rows of an image rather than multiply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowKernel {
    /// Max pooling read in place (x64: `isa/x64/asm/pool.rs`).
    MaxPool(PoolRows),
    /// The padded, stride-phase copy of a conv's input (x64: `isa/x64/asm/pad.rs`).
    PadPlanes(PadRows),
}

impl Spec {
    /// A plain GEMM tile of `vector`'s family: one row, one vector, one tap at 0, no
    /// epilogue, every option off. Callers set what differs with
    /// `Spec { .., ..Spec::new(vector) }`.
    pub fn new(vector: Vector) -> Spec {
        Spec {
            vector,
            mr: 1,
            nv: 1,
            masked: false,
            accumulate: false,
            xstride: 0,
            taps: vec![0],
            remap: None,
            chanvec: false,
            xoffs: Vec::new(),
            partial: false,
            tap_masks: TapMasks::Off,
            prefetch_x: false,
            ops: Vec::new(),
            rows: None,
        }
    }

    /// The row kernel `k` of `vector`'s family (see [`Spec::rows`]).
    pub fn row_kernel(vector: Vector, k: RowKernel) -> Spec {
        Spec {
            rows: Some(k),
            ..Spec::new(vector)
        }
    }

    pub fn name(&self) -> String {
        match &self.rows {
            Some(RowKernel::MaxPool(p)) => {
                let rows: Vec<String> = p.rows.iter().map(|r| r.to_string()).collect();
                return format!(
                    "uk_{}_maxpool_{}x{}s{}_rows{}",
                    self.vector.name,
                    p.ow,
                    p.kw,
                    p.sw,
                    rows.join("")
                );
            }
            Some(RowKernel::PadPlanes(p)) => {
                return format!(
                    "uk_{}_pad_{}x{}_s{}x{}_{}ph",
                    self.vector.name,
                    p.hqwq[0],
                    p.hqwq[1],
                    p.stride[0],
                    p.stride[1],
                    p.phases.len()
                );
            }
            None => {}
        }
        format!(
            "uk_{}_{}x{}{}{}{}{}{}{}{}",
            self.vector.name,
            self.mr,
            self.nv * self.vector.vl,
            if self.masked { "_m" } else { "" },
            if self.accumulate { "_acc" } else { "" },
            if self.remap.is_some() { "_remap" } else { "" },
            if self.chanvec { "_cv" } else { "" },
            if self.partial { "_part" } else { "" },
            if self.prefetch_x { "_px" } else { "" },
            match self.tap_masks {
                TapMasks::Off => "",
                TapMasks::Fmas => "_tm",
                TapMasks::FmasAndLoads => "_tml",
                TapMasks::FmasByColumn(_) => "_tmc",
            },
        )
    }
}

/// One padded phase copy's geometry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PadRows {
    /// Input plane.
    pub h: usize,
    pub w: usize,
    /// Top and left padding.
    pub pads: [usize; 2],
    pub stride: [usize; 2],
    /// `(py, px)` of each phase plane, in output order.
    pub phases: Vec<[usize; 2]>,
    /// Phase plane size `[hq, wq]`.
    pub hqwq: [usize; 2],
}

/// One max-pooling kernel: the geometry of a run of output rows that read the same
/// window rows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolRows {
    /// Input row length (floats).
    pub w: usize,
    /// Outputs per row (at most `MAX_VECTORS * 16`).
    pub ow: usize,
    /// Window width and horizontal stride (1 or 2) and left padding.
    pub kw: usize,
    pub sw: usize,
    pub pl: usize,
    /// Window rows read (inside the image for every output row of a call).
    pub rows: Vec<usize>,
    /// Floats between the window row 0 of consecutive output rows (`sh * w`).
    pub row_step: usize,
}

/// The vector shape of one family of assembled microkernels, as the planner and the
/// Cranelift lowering see it; the ISA layer knows which instructions it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vector {
    /// Family name, in kernel and plan names (`avx2`, `avx512`).
    pub name: &'static str,
    /// f32 lanes per vector.
    pub vl: usize,
    /// Full tile rows (output channels; the broadcast operand).
    pub mr: usize,
    /// Vectors per tile row (the tile has `nv * vl` pixel columns).
    pub nv: usize,
    /// Lane masks on loads, stores and FMAs: what the kernels that read convs and pools in
    /// place need.
    pub masks: bool,
    /// The assembled epilogue computes the activations of [`ActOp`] (exp-based and hard
    /// ones); else they run after it, in the Cranelift epilogue.
    pub act: bool,
}

impl Vector {
    pub fn vl(&self) -> usize {
        self.vl
    }
    pub fn mr(&self) -> usize {
        self.mr
    }
    pub fn nv(&self) -> usize {
        self.nv
    }
    /// Pixel columns of a full tile.
    pub fn nr(&self) -> usize {
        self.vl * self.nv
    }
    pub fn name(&self) -> &'static str {
        self.name
    }
}
