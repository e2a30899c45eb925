//! Every assembled microkernel variant this machine can run (AVX2+FMA, AVX-512), full and
//! edge tiles (every row count, every vector count, masked columns), from zero and
//! accumulating, with each fused epilogue, against a plain reference. The reference does
//! the same single-rounding FMA chain (`f32::mul_add`) in the same order, so the comparison
//! is bit for bit; stores outside the tile must not happen (sentinels).

use bnc_codegen::testing::{
    ActOp, EpOp, Isa, Microkernels, PadRows, PoolRows, Remap, RowKernel, Spec, TapMasks, host_has,
};

const SENTINEL: f32 = -12345.5;

fn ops_list() -> Vec<Vec<EpOp>> {
    vec![
        vec![],
        vec![EpOp::Shift(0)],
        vec![EpOp::ScaleShift(0, 1), EpOp::AddRows(2), EpOp::Max(0)],
        vec![
            EpOp::Scale(1),
            EpOp::Max((-0.5f32).to_bits()),
            EpOp::Min(1.25f32.to_bits()),
        ],
        vec![
            EpOp::AddRows(2),
            EpOp::ScaleShift(1, 0),
            EpOp::Max(0),
            EpOp::Min(6.0f32.to_bits()),
        ],
    ]
}

/// The contract's epilogue on one element: `chan(s)` is slot `s`'s per-channel value for
/// the element's channel, `res` its residual.
fn apply_ops(ops: &[EpOp], mut acc: f32, chan: impl Fn(u8) -> f32, res: f32) -> f32 {
    for op in ops {
        acc = match *op {
            EpOp::ScaleShift(a, b) => acc.mul_add(chan(a), chan(b)),
            EpOp::Scale(a) => acc * chan(a),
            EpOp::Shift(a) => acc + chan(a),
            EpOp::AddRows(_) => acc + res,
            EpOp::Max(b) => {
                let b = f32::from_bits(b);
                if acc > b { acc } else { b }
            }
            EpOp::Min(b) => {
                let b = f32::from_bits(b);
                if acc < b { acc } else { b }
            }
            EpOp::Act(f) => act_ref(f, acc),
        };
    }
    acc
}

/// The Cranelift epilogue's activation sequence (`Em::vexp`, `Em::act`) in scalar f32.
fn act_ref(f: ActOp, x: f32) -> f32 {
    fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.0, 88.0);
        let k = (x * std::f32::consts::LOG2_E).round_ties_even();
        let r = k.mul_add(-0.693_359_4, x);
        let r = k.mul_add(2.121_944_4e-4, r);
        let mut p = 1.0f32 / 720.0;
        for c in [1.0f32 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = p.mul_add(r, c);
        }
        p * f32::from_bits(((k as i32 + 127) << 23) as u32)
    }
    let sigmoid = |x: f32| 1.0 / (1.0 + exp(-x));
    let hard = |x: f32| {
        let t = x + 3.0;
        let t = if t > 0.0 { t } else { 0.0 };
        if t < 6.0 { t } else { 6.0 }
    };
    match f {
        ActOp::Sigmoid => sigmoid(x),
        ActOp::Silu => x * sigmoid(x),
        ActOp::Tanh => sigmoid(x * 2.0) * 2.0 - 1.0,
        ActOp::HardSigmoid => hard(x) * (1.0 / 6.0),
        ActOp::HardSwish => (x * hard(x)) * (1.0 / 6.0),
    }
}

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Assembles and loads `specs`, after checking that each kernel uses no instruction beyond
/// its level: AVX-512F for the AVX-512 kernels (what `cpu_level` and the native target
/// check; a `vxorps zmm`, AVX-512DQ, once slipped into the activations), no AVX-512 for the
/// AVX2 ones.
fn load(specs: &[Spec]) -> Microkernels {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    for spec in specs {
        let bytes = bnc_codegen::testing::assemble(spec).unwrap();
        // The code ends at its `ret`; constant tables follow.
        for ins in Decoder::new(64, &bytes, DecoderOptions::NONE) {
            if ins.mnemonic() == Mnemonic::Ret {
                break;
            }
            for f in ins.cpuid_features() {
                let f = format!("{f:?}");
                let allowed = match Isa::of(&spec.vector) {
                    Isa::Avx512 => !f.starts_with("AVX512") || f == "AVX512F",
                    Isa::Avx2 => !f.starts_with("AVX512"),
                };
                assert!(allowed, "{}: {:?} needs {f}", spec.name(), ins.mnemonic());
            }
        }
    }
    Microkernels::new(specs).unwrap()
}

/// `got == want` bit for bit; `what(i)` names element `i` in the failure message.
fn assert_bits(got: &[f32], want: &[f32], what: impl Fn(usize) -> String) {
    assert_eq!(got.len(), want.len());
    for (i, (g, e)) in got.iter().zip(want).enumerate() {
        assert!(g.to_bits() == e.to_bits(), "{}: got {g}, want {e}", what(i));
    }
}

/// Plain reference of one tile, same operation order as the contract.
#[allow(clippy::too_many_arguments)]
fn reference(
    spec: &Spec,
    w: &[f32],
    x: &[f32],
    c0: &[f32],
    ldc: usize,
    k: usize,
    n: usize,
    vecs: [&[f32]; 2],
    res: &[f32],
) -> Vec<f32> {
    let mut c = c0.to_vec();
    for r in 0..spec.mr {
        for j in 0..n {
            let mut acc = if spec.accumulate {
                c0[r * ldc + j]
            } else {
                0.0
            };
            let nt = spec.taps.len();
            for s in 0..k {
                for (t, &off) in spec.taps.iter().enumerate() {
                    let xv = x[s * spec.xstride + off as usize + j];
                    acc = w[(s * nt + t) * spec.mr + r].mul_add(xv, acc);
                }
            }
            acc = apply_ops(&spec.ops, acc, |s| vecs[s as usize][r], res[r * ldc + j]);
            c[r * ldc + j] = acc;
        }
    }
    c
}

fn check_isa(isa: Isa) {
    if !host_has(isa) {
        eprintln!("SKIPPED: this machine cannot run {isa:?} microkernels");
        return;
    }
    let vl = isa.vl();
    let xstride = isa.nr() + 8; // not the packed width: the stride is honoured
    let ops = ops_list();
    let mut specs = Vec::new();
    let mut i = 0;
    for mr in 1..=isa.mr() {
        for nv in 1..=isa.nv() {
            for masked in [false, true] {
                for accumulate in [false, true] {
                    specs.push(Spec {
                        mr,
                        nv,
                        masked,
                        accumulate,
                        xstride,
                        ops: ops[i % ops.len()].clone(),
                        ..Spec::new(isa.vector())
                    });
                    i += 1;
                }
            }
        }
    }
    // Every epilogue also on the full tile, masked and not.
    for o in &ops {
        for masked in [false, true] {
            specs.push(Spec {
                mr: isa.mr(),
                nv: isa.nv(),
                masked,
                accumulate: false,
                xstride,
                ops: o.clone(),
                ..Spec::new(isa.vector())
            });
        }
    }
    // Activations computed in the AVX-512 epilogue, on full and edge tiles.
    if isa == Isa::Avx512 {
        let acts = [
            ActOp::Sigmoid,
            ActOp::Silu,
            ActOp::Tanh,
            ActOp::HardSigmoid,
            ActOp::HardSwish,
        ];
        for (i, f) in acts.into_iter().enumerate() {
            for (mr, nv, masked) in [(isa.mr(), isa.nv(), false), (5, 1, true), (12, 2, true)] {
                specs.push(Spec {
                    mr,
                    nv,
                    masked,
                    accumulate: masked,
                    xstride,
                    ops: vec![
                        EpOp::ScaleShift(0, 1),
                        EpOp::Act(f),
                        EpOp::Shift((i % 2) as u8),
                    ],
                    ..Spec::new(isa.vector())
                });
            }
        }
    }
    // Several taps (a convolution window read in place), full and edge tiles.
    if isa == Isa::Avx512 {
        for (mr, nv, masked) in [(isa.mr(), isa.nv(), false), (5, 1, true), (12, 2, true)] {
            for taps in [
                vec![0, 1, 2, 40, 41, 42],
                vec![3, 0, 77, 9, 1, 2, 5, 60, 61],
            ] {
                specs.push(Spec {
                    mr,
                    nv,
                    masked,
                    accumulate: masked,
                    xstride: 150,
                    taps,
                    // Prefetches past the input's end: they must not fault.
                    prefetch_x: masked,
                    ops: ops[2].clone(),
                    ..Spec::new(isa.vector())
                });
            }
        }
    }
    let kernels = load(&specs);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut checked = 0;
    for (si, spec) in specs.iter().enumerate() {
        let f = kernels.get(si);
        let ns: Vec<usize> = if spec.masked {
            let lo = (spec.nv - 1) * vl;
            vec![lo + 1, lo + vl / 2 + 1, lo + vl - 1, lo + vl]
        } else {
            vec![spec.nv * vl]
        };
        for &k in &[1usize, 2, 3, 4, 5, 8, 37] {
            for &n in &ns {
                let ldc = spec.nv * vl + 7;
                let rows = spec.mr + 1; // one sentinel row below the tile
                let w = rng.vec(k * spec.taps.len() * spec.mr);
                let reach = spec.taps.iter().max().copied().unwrap_or(0) as usize + spec.nv * vl;
                let x = rng.vec(k * spec.xstride + reach);
                let mut c0 = vec![SENTINEL; rows * ldc];
                if spec.accumulate {
                    for r in 0..spec.mr {
                        for j in 0..n {
                            c0[r * ldc + j] = rng.f();
                        }
                    }
                }
                let v0 = rng.vec(spec.mr);
                let v1 = rng.vec(spec.mr);
                let res = rng.vec(rows * ldc);
                let want = reference(spec, &w, &x, &c0, ldc, k, n, [&v0, &v1], &res);
                let mut c = c0.clone();
                let ep: [u64; 4] = [
                    n as u64,
                    v0.as_ptr() as u64,
                    v1.as_ptr() as u64,
                    res.as_ptr() as u64,
                ];
                // SAFETY: w holds k*mr floats, x k rows of xstride >= nv*vl floats, c and
                // res mr rows of ldc floats (ldc >= n), the slot vectors mr floats; the
                // kernel runs on an ISA this machine has (checked above).
                unsafe {
                    f(
                        w.as_ptr(),
                        x.as_ptr(),
                        c.as_mut_ptr(),
                        k as u64,
                        (ldc * 4) as i64,
                        ep.as_ptr(),
                    );
                }
                assert_bits(&c, &want, |i| {
                    let (name, ops) = (spec.name(), &spec.ops);
                    format!(
                        "{name} ops {ops:?}: k={k} n={n} element (row {}, col {})",
                        i / ldc,
                        i % ldc
                    )
                });
                checked += 1;
            }
        }
    }
    eprintln!(
        "{isa:?}: {} kernels, {checked} tiles bit-exact",
        specs.len()
    );
}

#[test]
fn avx2_microkernels() {
    check_isa(Isa::Avx2);
}

#[test]
fn avx512_microkernels() {
    check_isa(Isa::Avx512);
}

/// Tap masks (a zero-padded convolution read from its unpadded input): lane `l` of vector
/// `j` takes tap `t`'s terms only when bit `l` of `masks[2t + j]` is set. Taps reach
/// before the tile origin; the masked-out input is NaN, so a lane that used it would show.
/// Every variant: masked FMAs only, masked loads too, and masks by window column.
#[test]
fn avx512_tap_mask_microkernels() {
    let isa = Isa::Avx512;
    if !host_has(isa) {
        eprintln!("SKIPPED: this machine cannot run {isa:?} microkernels");
        return;
    }
    let vl = isa.vl();
    let taps = vec![-21, -20, -19, -1, 0, 1, 19, 20, 21];
    let (xstride, before) = (150usize, 21usize);
    let ops = ops_list();
    let mut specs = Vec::new();
    let shapes = [(12, 2, false), (5, 1, true), (12, 2, true), (7, 2, false)];
    for (i, (mr, nv, masked)) in shapes.into_iter().enumerate() {
        for tap_masks in [
            TapMasks::Fmas,
            TapMasks::FmasAndLoads,
            TapMasks::FmasByColumn(3),
        ] {
            specs.push(Spec {
                mr,
                nv,
                masked,
                accumulate: masked,
                xstride,
                taps: taps.clone(),
                prefetch_x: true,
                tap_masks,
                ops: ops[[2, 4, 0, 3][i]].clone(),
                ..Spec::new(isa.vector())
            });
        }
    }
    let kernels = load(&specs);
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    let mut bits = || {
        rng.f();
        (rng.0 >> 20) as u16
    };
    for (si, spec) in specs.iter().enumerate() {
        let f = kernels.get(si);
        let n = if spec.masked {
            (spec.nv - 1) * vl + 5
        } else {
            spec.nv * vl
        };
        for k in [1usize, 3, 8] {
            let mut masks: Vec<u16> = (0..2 * taps.len()).map(|_| bits()).collect();
            if let TapMasks::FmasByColumn(kw) = spec.tap_masks {
                // Masks that depend on the window column only (what the planner picks
                // this variant for): the kernel reads those of the first row.
                for i in 2 * kw as usize..masks.len() {
                    masks[i] = masks[i % (2 * kw as usize)];
                }
            }
            let mut rng = Rng(0x5eed_0000 + k as u64);
            let w = rng.vec(k * taps.len() * spec.mr);
            // x[before + s*xstride + q] is position q of step s; lanes a mask drops: NaN.
            let mut x = vec![f32::NAN; before + k * xstride + 2 * vl + 21];
            let mut want = vec![SENTINEL; (spec.mr + 1) * 40];
            let ldc = 40;
            let mut c0 = want.clone();
            for r in 0..spec.mr {
                for j in 0..n {
                    if spec.accumulate {
                        c0[r * ldc + j] = rng.f();
                    }
                }
            }
            let lane_on = |t: usize, j: usize| masks[2 * t + j / vl] >> (j % vl) & 1 == 1;
            for s in 0..k {
                for (t, &off) in taps.iter().enumerate() {
                    for j in 0..spec.nv * vl {
                        if lane_on(t, j) {
                            let at = (before as i32 + (s * xstride + j) as i32 + off) as usize;
                            if x[at].is_nan() {
                                x[at] = rng.f();
                            }
                        }
                    }
                }
            }
            let v0 = rng.vec(spec.mr);
            let v1 = rng.vec(spec.mr);
            let res = rng.vec((spec.mr + 1) * ldc);
            for r in 0..spec.mr {
                for j in 0..n {
                    let mut acc = if spec.accumulate {
                        c0[r * ldc + j]
                    } else {
                        0.0
                    };
                    for s in 0..k {
                        for (t, &off) in taps.iter().enumerate() {
                            let at = (before as i32 + (s * xstride + j) as i32 + off) as usize;
                            if lane_on(t, j) {
                                acc = w[(s * taps.len() + t) * spec.mr + r].mul_add(x[at], acc);
                            }
                        }
                    }
                    want[r * ldc + j] = apply_ops(
                        &spec.ops,
                        acc,
                        |s| [&v0, &v1][s as usize][r],
                        res[r * ldc + j],
                    );
                }
            }
            let mut c = c0.clone();
            let ep: [u64; 5] = [
                n as u64,
                masks.as_ptr() as u64,
                v0.as_ptr() as u64,
                v1.as_ptr() as u64,
                res.as_ptr() as u64,
            ];
            // SAFETY: every lane a mask keeps reads inside x (origin `before` floats in,
            // taps at least -21, k steps of xstride plus two vectors and the largest tap
            // after); c and res hold mr + 1 rows of ldc >= n floats; the slot vectors mr
            // floats; this machine runs AVX-512 (checked above).
            unsafe {
                f(
                    w.as_ptr(),
                    x.as_ptr().add(before),
                    c.as_mut_ptr(),
                    k as u64,
                    (ldc * 4) as i64,
                    ep.as_ptr(),
                );
            }
            assert_bits(&c, &want, |i| {
                let name = spec.name();
                format!("{name}: k={k} element (row {}, col {})", i / ldc, i % ldc)
            });
        }
    }
}

/// Remapped tiles (a convolution computed on a padded grid): lanes of mask `b` of a vector
/// go to the vector's place plus `off - b * gap`, other lanes nowhere; the accumulated C and
/// the residual are read through the same map. Two and three pieces per vector.
#[test]
fn avx512_remap_microkernels() {
    let isa = Isa::Avx512;
    if !host_has(isa) {
        eprintln!("SKIPPED: this machine cannot run {isa:?} microkernels");
        return;
    }
    let gap_f = 3usize; // garbage columns per grid row
    let ops = ops_list();
    let mut specs = Vec::new();
    for (mr, nv, pieces) in [(12, 2, 2), (7, 2, 3), (12, 1, 2), (1, 1, 3), (12, 2, 3)] {
        for accumulate in [false, true] {
            for o in [&ops[0], &ops[2], &ops[4]] {
                specs.push(Spec {
                    mr,
                    nv,
                    masked: false,
                    accumulate,
                    xstride: 40,
                    taps: vec![0, 1, 7],
                    remap: Some(Remap {
                        gap: (gap_f * 4) as i32,
                        pieces,
                    }),
                    ops: o.clone(),
                    ..Spec::new(isa.vector())
                });
            }
        }
    }
    let kernels = load(&specs);
    let mut rng = Rng(0x5151_2323_7777_0001);
    let ldc = 100usize;
    let margin = 16usize; // C rows are addressed from `margin` floats into each row
    for (si, spec) in specs.iter().enumerate() {
        let f = kernels.get(si);
        for case in 0..6 {
            let k = [1usize, 3, 8][case % 3];
            // Masks: consecutive disjoint lane ranges per piece (with holes), per vector.
            let pieces = spec.remap.unwrap().pieces;
            let mut masks = [0u16; 6];
            let mut offs = [0i64; 2];
            for j in 0..spec.nv {
                let mut lo = 0u32;
                for b in 0..pieces {
                    let start = lo + (rng.f().abs() * 2.0) as u32 % (17 - lo);
                    let end = start + (rng.f().abs() * 6.0) as u32 % (17 - start);
                    masks[j * pieces + b] = (((1u32 << end) - 1) & !((1u32 << start) - 1)) as u16;
                    lo = end;
                }
                offs[j] = -((case as i64 % 3) * (gap_f as i64) * 4);
            }
            let nt = spec.taps.len();
            let w = rng.vec(k * nt * spec.mr);
            let x = rng.vec(k * spec.xstride + 8 + spec.nv * 16);
            let c0: Vec<f32> = (0..(spec.mr + 1) * ldc).map(|_| rng.f()).collect();
            let res = rng.vec((spec.mr + 1) * ldc);
            let v0 = rng.vec(spec.mr);
            let v1 = rng.vec(spec.mr);
            // Where lane l of vector j of a row lands (float index from the row's origin).
            let place = |j: usize, l: usize| -> Option<usize> {
                let base = (margin + j * 16 + l) as i64 + offs[j] / 4;
                (0..pieces)
                    .find(|&b| masks[j * pieces + b] >> l & 1 == 1)
                    .map(|b| (base - (b * gap_f) as i64) as usize)
            };
            let mut want = c0.clone();
            for r in 0..spec.mr {
                for j in 0..spec.nv {
                    for l in 0..16 {
                        let Some(pos) = place(j, l) else { continue };
                        let col = j * 16 + l;
                        let mut acc = if spec.accumulate {
                            c0[r * ldc + pos]
                        } else {
                            0.0
                        };
                        for s in 0..k {
                            for (t, &off) in spec.taps.iter().enumerate() {
                                let xv = x[s * spec.xstride + off as usize + col];
                                acc = w[(s * nt + t) * spec.mr + r].mul_add(xv, acc);
                            }
                        }
                        let chan = |s: u8| [&v0, &v1][s as usize][r];
                        acc = apply_ops(&spec.ops, acc, chan, res[r * ldc + pos]);
                        want[r * ldc + pos] = acc;
                    }
                }
            }
            let mut c = c0.clone();
            let mut ep = [0u64; 8];
            ep[1] = offs[0] as u64;
            ep[2] = offs[1] as u64;
            for (i, m) in masks.iter().enumerate() {
                ep[3 + i / 4] |= (*m as u64) << (16 * (i % 4));
            }
            let e = spec.remap.unwrap().slots_at();
            ep[e] = v0.as_ptr() as u64;
            ep[e + 1] = v1.as_ptr() as u64;
            // SAFETY: the residual slot points `margin` floats into its rows like C.
            ep[e + 2] = unsafe { res.as_ptr().add(margin) } as u64;
            // SAFETY: every lane the masks select lands inside C's rows (margin >= the
            // largest shift), x holds every column the taps read, the slot vectors mr floats.
            unsafe {
                f(
                    w.as_ptr(),
                    x.as_ptr(),
                    c.as_mut_ptr().add(margin),
                    k as u64,
                    (ldc * 4) as i64,
                    ep.as_ptr(),
                );
            }
            assert_bits(&c, &want, |i| {
                let name = spec.name();
                format!(
                    "{name} case {case}: element (row {}, col {})",
                    i / ldc,
                    i % ldc
                )
            });
        }
    }
}

/// Channel-vectorised kernels (vectors along output channels, pixels broadcast): every
/// pixel count, both vector counts, partial last vector, accumulating, several taps, each
/// epilogue including the residual (gathered) and activations; nothing stored past the
/// valid channels or pixels (sentinels).
#[test]
fn avx512_chanvec_microkernels() {
    let isa = Isa::Avx512;
    if !host_has(isa) {
        eprintln!("SKIPPED: this machine cannot run {isa:?} microkernels");
        return;
    }
    let mut ops = ops_list();
    ops.push(vec![EpOp::Shift(1), EpOp::Act(ActOp::Silu)]);
    ops.push(vec![EpOp::AddRows(2), EpOp::Act(ActOp::HardSwish)]);
    let mut specs = Vec::new();
    let mut i = 0;
    for mr in 1..=12 {
        for nv in 1..=2 {
            for masked in [false, true] {
                specs.push(Spec {
                    mr,
                    nv,
                    masked,
                    accumulate: i % 3 == 1,
                    xstride: 23,
                    taps: if i % 2 == 0 { vec![0] } else { vec![0, 2, 9] },
                    chanvec: true,
                    partial: i % 4 == 3,
                    // Every other kernel's pixels jump 3 input columns after each 5 (a tile
                    // spanning output rows of a padded grid).
                    xoffs: (0..mr as i32)
                        .map(|r| r + (i % 2) as i32 * (r / 5) * 3)
                        .collect(),
                    ops: ops[i % ops.len()].clone(),
                    ..Spec::new(isa.vector())
                });
                i += 1;
            }
        }
    }
    let kernels = load(&specs);
    let mut rng = Rng(0x0c0f_fee0_1234_5678);
    let ldc = 29usize; // floats between channels of C
    for (si, spec) in specs.iter().enumerate() {
        let f = kernels.get(si);
        let chans = spec.nv * 16;
        let ns: Vec<usize> = if spec.masked {
            vec![chans - 15, chans - 8, chans - 1]
        } else {
            vec![chans]
        };
        let nt = spec.taps.len();
        for &k in &[1usize, 3, 4, 9] {
            for &n in &ns {
                let w = rng.vec(k * nt * chans);
                let x = rng.vec(k * spec.xstride + 9 + spec.mr * 2);
                let rows = chans + 1; // one sentinel channel row
                let mut c0 = vec![SENTINEL; rows * ldc];
                for ch in 0..n {
                    for r in 0..spec.mr {
                        c0[ch * ldc + r] = rng.f();
                    }
                }
                let res = rng.vec(rows * ldc);
                let v0 = rng.vec(chans);
                let v1 = rng.vec(chans);
                // The partial-sum tile: [pixel][channel] dense.
                let p0 = rng.vec(spec.mr * chans);
                let mut want = c0.clone();
                let mut want_p = p0.clone();
                for ch in 0..n {
                    for r in 0..spec.mr {
                        let mut acc = if spec.accumulate {
                            p0[r * chans + ch]
                        } else {
                            0.0
                        };
                        for s in 0..k {
                            for (t, &off) in spec.taps.iter().enumerate() {
                                let xv = x[s * spec.xstride + (off + spec.xoffs[r]) as usize];
                                acc = w[(s * nt + t) * chans + ch].mul_add(xv, acc);
                            }
                        }
                        if spec.partial {
                            want_p[r * chans + ch] = acc;
                            continue;
                        }
                        let chan = |s: u8| [&v0, &v1][s as usize][ch];
                        acc = apply_ops(&spec.ops, acc, chan, res[ch * ldc + r]);
                        want[ch * ldc + r] = acc;
                    }
                }
                let mut c = c0.clone();
                let mut p = p0.clone();
                let ep: [u64; 5] = [
                    n as u64,
                    p.as_mut_ptr() as u64,
                    v0.as_ptr() as u64,
                    v1.as_ptr() as u64,
                    res.as_ptr() as u64,
                ];
                // SAFETY: w holds k*T rows of nv*16 floats, x every pixel the taps reach,
                // C and the residual nv*16 channel rows of ldc >= mr floats, the slot vectors
                // nv*16 floats; the ISA is checked above.
                unsafe {
                    f(
                        w.as_ptr(),
                        x.as_ptr(),
                        c.as_mut_ptr(),
                        k as u64,
                        (ldc * 4) as i64,
                        ep.as_ptr(),
                    );
                }
                if spec.partial {
                    // Channels past n of the partial tile hold sums of the zero-padded
                    // weights' lanes; only the valid ones are specified.
                    for r in 0..spec.mr {
                        for ch in 0..n {
                            let (g, e) = (p[r * chans + ch], want_p[r * chans + ch]);
                            assert!(
                                g.to_bits() == e.to_bits(),
                                "{} partial: got {g}, want {e}",
                                spec.name()
                            );
                        }
                    }
                }
                assert_bits(&c, &want, |i| {
                    let (name, ops) = (spec.name(), &spec.ops);
                    format!(
                        "{name} ops {ops:?}: k={k} n={n} (channel {}, pixel {})",
                        i / ldc,
                        i % ldc
                    )
                });
            }
        }
    }
}

/// Max-pooling rows read in place: strides 1 and 2, left padding, windows past the right
/// edge, partial last vectors, subsets of window rows, several rows per call; inputs with
/// NaN, -inf and both zeros, compared bit for bit with `v > acc || v is NaN ? v : acc`
/// from -inf; nothing stored past each row.
#[test]
fn avx512_max_pool_rows() {
    if !host_has(Isa::Avx512) {
        eprintln!("SKIPPED: this machine cannot run AVX-512 microkernels");
        return;
    }
    // (w, ow, kw, sw, pl, rows, sh)
    let rows = |w: usize, ow, kw, sw, pl, rows: &[usize], sh: usize| PoolRows {
        w,
        ow,
        kw,
        sw,
        pl,
        rows: rows.to_vec(),
        row_step: sh * w,
    };
    let cases = [
        rows(112, 56, 3, 2, 1, &[0, 1, 2], 2),
        rows(112, 56, 3, 2, 1, &[1, 2], 2),
        rows(23, 11, 3, 2, 0, &[0, 1, 2], 2),
        rows(24, 12, 3, 2, 0, &[0, 2], 2),
        rows(40, 40, 3, 1, 1, &[0, 1, 2], 1),
        rows(7, 3, 2, 2, 0, &[0, 1], 2),
        rows(300, 150, 3, 2, 1, &[0, 1], 2),
        rows(17, 17, 5, 1, 2, &[1, 2, 3, 4], 1),
    ];
    let specs: Vec<Spec> = cases
        .iter()
        .map(|p| Spec::row_kernel(Isa::Avx512.vector(), RowKernel::MaxPool(p.clone())))
        .collect();
    let kernels = load(&specs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (si, (spec, p)) in specs.iter().zip(&cases).enumerate() {
        let (w, ow, kw, sw, pl) = (&p.w, &p.ow, &p.kw, &p.sw, &p.pl);
        let (rows, step) = (&p.rows, p.row_step);
        let count = 3;
        let len = (count - 1) * step + rows.iter().max().unwrap() * w + w;
        let x: Vec<f32> = (0..len)
            .map(|i| match i % 37 {
                5 => f32::NAN,
                9 => f32::NEG_INFINITY,
                13 => 0.0,
                14 => -0.0,
                _ => rng.f(),
            })
            .collect();
        let mut want = vec![SENTINEL; count * ow + 16];
        for r in 0..count {
            for ox in 0..*ow {
                let mut acc = f32::NEG_INFINITY;
                for &ky in rows {
                    for kx in 0..*kw {
                        let col = (ox * sw + kx) as i64 - *pl as i64;
                        let v = if (0..*w as i64).contains(&col) {
                            x[r * step + ky * w + col as usize]
                        } else {
                            f32::NEG_INFINITY
                        };
                        if v > acc || v.is_nan() {
                            acc = v;
                        }
                    }
                }
                want[r * ow + ox] = acc;
            }
        }
        let mut c = vec![SENTINEL; count * ow + 16];
        // SAFETY: the kernel reads window rows `rows` of `count` output rows, each inside
        // x (len covers the last row), columns only within 0..w (masked loads), and writes
        // count * ow floats of c; this machine runs AVX-512 (checked above).
        unsafe {
            kernels.get(si)(
                x.as_ptr(),
                x.as_ptr(),
                c.as_mut_ptr(),
                count as u64,
                0,
                std::ptr::null(),
            );
        }
        assert_bits(&c, &want, |i| {
            format!(
                "{}: output {i} (row {}, column {})",
                spec.name(),
                i / ow,
                i % ow
            )
        });
    }
}

/// The padded phase copy: strides 1 and 2, phases in any order, pads on every side (rows
/// and columns past the input filled), per-channel fill values, channel by channel into
/// consecutive phase planes, against a scalar reference; nothing stored past the last one.
#[test]
fn avx512_pad_planes_rows() {
    if !host_has(Isa::Avx512) {
        eprintln!("SKIPPED: this machine cannot run AVX-512 microkernels");
        return;
    }
    let pad = |h: usize,
               w: usize,
               pads: [usize; 2],
               stride: [usize; 2],
               phases: &[[usize; 2]],
               extra: [usize; 2]| {
        // Phase planes covering the padded image plus `extra` rows/columns of padding.
        let hq = (h + 2 * pads[0] + extra[0]).div_ceil(stride[0]);
        let wq = (w + 2 * pads[1] + extra[1]).div_ceil(stride[1]);
        PadRows {
            h,
            w,
            pads,
            stride,
            phases: phases.to_vec(),
            hqwq: [hq, wq],
        }
    };
    let four = [[0, 0], [0, 1], [1, 0], [1, 1]];
    let cases = [
        pad(56, 56, [1, 1], [2, 2], &four, [0, 0]),
        pad(21, 40, [3, 3], [2, 2], &four, [1, 0]),
        pad(9, 18, [1, 2], [1, 1], &[[0, 0]], [2, 3]),
        pad(14, 14, [0, 0], [2, 2], &[[0, 0]], [0, 0]),
        pad(8, 13, [2, 1], [2, 1], &[[1, 0], [0, 0]], [0, 5]),
        pad(5, 300, [1, 1], [1, 2], &[[0, 1], [0, 0]], [0, 0]),
    ];
    let specs: Vec<Spec> = cases
        .iter()
        .map(|p| Spec::row_kernel(Isa::Avx512.vector(), RowKernel::PadPlanes(p.clone())))
        .collect();
    let kernels = load(&specs);
    let mut rng = Rng(0x7a11_ed00_c0de_0001);
    for (si, p) in cases.iter().enumerate() {
        let channels = 3;
        let [hq, wq] = p.hqwq;
        let plane = p.phases.len() * hq * wq;
        let x = rng.vec(channels * p.h * p.w);
        let fills = rng.vec(channels);
        let mut want = vec![SENTINEL; channels * plane + 16];
        for c in 0..channels {
            for (pi, &[py, px]) in p.phases.iter().enumerate() {
                for y in 0..hq {
                    for xx in 0..wq {
                        let iy = (y * p.stride[0] + py) as i64 - p.pads[0] as i64;
                        let ix = (xx * p.stride[1] + px) as i64 - p.pads[1] as i64;
                        let inside = (0..p.h as i64).contains(&iy) && (0..p.w as i64).contains(&ix);
                        want[c * plane + pi * hq * wq + y * wq + xx] = if inside {
                            x[c * p.h * p.w + iy as usize * p.w + ix as usize]
                        } else {
                            fills[c]
                        };
                    }
                }
            }
        }
        let mut got = vec![SENTINEL; channels * plane + 16];
        for c in 0..channels {
            // SAFETY: channel c's input plane, fill value and phase planes are inside x,
            // fills and got; columns outside the input are masked; this machine runs
            // AVX-512 (checked above).
            unsafe {
                kernels.get(si)(
                    fills.as_ptr().add(c),
                    x.as_ptr().add(c * p.h * p.w),
                    got.as_mut_ptr().add(c * plane),
                    1,
                    0,
                    std::ptr::null(),
                );
            }
        }
        assert_bits(&got, &want, |i| {
            let name = specs[si].name();
            format!(
                "{name}: float {i} (channel {}, offset {})",
                i / plane,
                i % plane
            )
        });
    }
}
