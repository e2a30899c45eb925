//! Every assembled microkernel variant this machine can run (AVX2+FMA, AVX-512), full and
//! edge tiles (every row count, every vector count, masked columns), from zero and
//! accumulating, with each fused epilogue, against a plain reference. The reference does
//! the same single-rounding FMA chain (`f32::mul_add`) in the same order, so the comparison
//! is bit for bit; stores outside the tile must not happen (sentinels).

use bnc_codegen::testing::{EpOp, Isa, Microkernels, Spec, host_has};

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
            for op in &spec.ops {
                acc = match *op {
                    EpOp::ScaleShift(a, b) => acc.mul_add(vecs[a as usize][r], vecs[b as usize][r]),
                    EpOp::Scale(a) => acc * vecs[a as usize][r],
                    EpOp::Shift(a) => acc + vecs[a as usize][r],
                    EpOp::AddRows(_) => acc + res[r * ldc + j],
                    EpOp::Max(b) => {
                        let b = f32::from_bits(b);
                        if acc > b { acc } else { b }
                    }
                    EpOp::Min(b) => {
                        let b = f32::from_bits(b);
                        if acc < b { acc } else { b }
                    }
                };
            }
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
                        isa,
                        mr,
                        nv,
                        masked,
                        accumulate,
                        xstride,
                        taps: vec![0],
                        ops: ops[i % ops.len()].clone(),
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
                isa,
                mr: isa.mr(),
                nv: isa.nv(),
                masked,
                accumulate: false,
                xstride,
                taps: vec![0],
                ops: o.clone(),
            });
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
                    isa,
                    mr,
                    nv,
                    masked,
                    accumulate: masked,
                    xstride: 150,
                    taps,
                    ops: ops[2].clone(),
                });
            }
        }
    }
    let kernels = Microkernels::new(&specs).unwrap();
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
                for (idx, (g, e)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == e.to_bits(),
                        "{} ops {:?}: k={k} n={n} element (row {}, col {}): got {g}, want {e}",
                        spec.name(),
                        spec.ops,
                        idx / ldc,
                        idx % ldc
                    );
                }
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
