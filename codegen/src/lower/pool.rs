//! Max and average pooling (assembled rows or Cranelift loops) and global average and max
//! pooling.

use super::*;

/// Max pooling read in place by assembled AVX-512 rows (see `isa/x64/asm/pool.rs`): per channel
/// plane, one call per run of output rows whose windows have the same rows inside the
/// image (the top rows, the middle, the bottom rows).
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_max_pool_in_place(
    em: &mut Em,
    io: &Io,
    p: &bnc_ir::Pool2d,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    vector: Vector,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let Io { x, out, lo, hi, .. } = *io;
    let [sh, sw] = p.stride;
    let rows_of = |oy: usize| -> Vec<usize> {
        (0..p.kernel[0])
            .filter(|&ky| (p.pad[0]..p.pad[0] + h).contains(&(oy * sh + ky)))
            .collect()
    };
    let mut runs: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for oy in 0..oh {
        let rows = rows_of(oy);
        match runs.last_mut() {
            Some((_, n, r)) if *r == rows => *n += 1,
            _ => runs.push((oy, 1, rows)),
        }
    }
    let c_n = x.c;
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let ob = em.plane(out, n, c);
        for (oy0, count, rows) in &runs {
            let spec = Spec::row_kernel(
                vector,
                RowKernel::MaxPool(PoolRows {
                    w,
                    ow,
                    kw: p.kernel[1],
                    sw,
                    pl: p.pad[1],
                    rows: rows.clone(),
                    row_step: sh * w,
                }),
            );
            let f = get(&spec, em.b.func);
            // Window row 0 of output row oy0 (above the plane when it is padding).
            let row0 = (oy0 * sh) as i64 - p.pad[0] as i64;
            let xp = em.add_i(xb, row0 * w as i64 * 4);
            let op = em.add_i(ob, (oy0 * ow * 4) as i64);
            let k = em.ic(*count as i64);
            let zero = em.ic(0);
            em.b.ins().call(f, &[xp, xp, op, k, zero, xp]);
        }
    });
}

/// Max/avg pooling, 4 output columns per step, on a padded copy filled with -inf (max) or
/// 0 (avg); avg multiplies by a precomputed per-position reciprocal of the divisor.
pub(super) fn emit_pool(
    em: &mut Em,
    io: &Io,
    p: &bnc_ir::Pool2d,
    hw: [usize; 2],
    ohw: [usize; 2],
    recip: Option<usize>,
) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let [oh, ow] = ohw;
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.stride;
    let (ph, qw) = pool_q(p, hw, ohw);
    let c_n = x.c;
    let is_max = recip.is_none();
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let fill = em.fc(if is_max { f32::NEG_INFINITY } else { 0.0 });
        padded_copy(em, xb, hw, [p.pad[0], p.pad[1]], ph, qw, sw, Some(fill));
        let q = em.scratch;
        let ob = em.plane(out, n, c);
        let init = em.splat(fill);
        em.lpc(0, oh, 1, |em, oy| {
            let compute = |em: &mut Em, ox: Value| -> Value {
                let mut acc = init;
                for ky in 0..kh {
                    let row = em.mul_i(oy, sh as i64);
                    let row = em.add_i(row, ky as i64);
                    let rb = em.mul_i(row, qw as i64);
                    let rb = em.b.ins().iadd(rb, ox);
                    let rb = em.ea(q, rb);
                    for kx in 0..kw {
                        let off = (((kx % sw) * ph * qw + kx / sw) * 4) as i32;
                        let v = em.ld4(rb, off);
                        acc = if is_max {
                            let gt = em.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
                            let nan = em.b.ins().fcmp(FloatCC::Unordered, v, v);
                            let take = em.b.ins().bor(gt, nan);
                            let take = em.mask_f(take);
                            em.b.ins().bitselect(take, v, acc)
                        } else {
                            em.b.ins().fadd(acc, v)
                        };
                    }
                }
                if let Some(r) = recip {
                    let s = em.mul_i(oy, ow as i64);
                    let s = em.b.ins().iadd(s, ox);
                    let rp = em.wptr(r);
                    let a = em.ea(rp, s);
                    let rv = em.b.ins().load(F32X4, ro(), a, 0);
                    acc = em.b.ins().fmul(acc, rv);
                }
                acc
            };
            let orow = em.mul_i(oy, ow as i64);
            em.store_row(ow, orow, ob, epi, n, c, compute);
        });
    });
}

pub(super) fn hsum(em: &mut Em, v: Value) -> Value {
    let mut s = em.b.ins().extractlane(v, 0);
    for l in 1..4u8 {
        let e = em.b.ins().extractlane(v, l);
        s = em.b.ins().fadd(s, e);
    }
    s
}

/// The mean of each `(n, c)` plane: summed 4 lanes at a time, the lanes by `hsum`, then
/// the tail.
pub(super) fn emit_gap(em: &mut Em, io: &Io) {
    let count = io.x.s as f32;
    reduce_planes(
        em,
        io,
        0.0,
        |em, acc, v| em.b.ins().fadd(acc, v),
        hsum,
        |em, acc, v| em.b.ins().fadd(acc, v),
        |em, sum| {
            let d = em.fc(count);
            em.b.ins().fdiv(sum, d)
        },
    );
}

/// Takes `v` over `acc` when it is greater or NaN (as `emit_pool`), so a NaN wins.
fn take_max(em: &mut Em, acc: Value, v: Value, vector: bool) -> Value {
    let gt = em.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
    let nan = em.b.ins().fcmp(FloatCC::Unordered, v, v);
    let t = em.b.ins().bor(gt, nan);
    if vector {
        let t = em.mask_f(t);
        em.b.ins().bitselect(t, v, acc)
    } else {
        em.b.ins().select(t, v, acc)
    }
}

/// The maximum of each `(n, c)` plane: 4 lanes at a time, then across the lanes and the tail,
/// so a NaN in the plane gives NaN.
pub(super) fn emit_gmp(em: &mut Em, io: &Io) {
    reduce_planes(
        em,
        io,
        f32::NEG_INFINITY,
        |em, acc, v| take_max(em, acc, v, true),
        |em, acc| {
            let mut m = em.b.ins().extractlane(acc, 0);
            for l in 1..4u8 {
                let e = em.b.ins().extractlane(acc, l);
                m = take_max(em, m, e, false);
            }
            m
        },
        |em, m, v| take_max(em, m, v, false),
        |_, m| m,
    );
}

/// One unit per `(n, c)` plane of `x`, reduced to one value through the epilogue into
/// `out[n, c]`: an f32x4 accumulator from `init` folds 4 lanes at a time (`vector`), its
/// lanes become one value (`lanes`), the tail joins it one by one (`scalar`), and `finish`
/// turns the result into the output.
fn reduce_planes(
    em: &mut Em,
    io: &Io,
    init: f32,
    vector: impl Fn(&mut Em, Value, Value) -> Value,
    lanes: impl Fn(&mut Em, Value) -> Value,
    scalar: impl Fn(&mut Em, Value, Value) -> Value,
    finish: impl Fn(&mut Em, Value) -> Value,
) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let s_n = x.s;
    let c_n = x.c;
    em.lp(lo, hi, 1, |em, u| {
        let (n, c) = em.divmod(u, c_n);
        let xb = em.plane(x, n, c);
        let acc = em.b.declare_var(F32X4);
        let start = em.vc(init);
        em.b.def_var(acc, start);
        let s4 = s_n / 4 * 4;
        em.lpc(0, s4, 4, |em, s| {
            let a = em.ea(xb, s);
            let v = em.ld4(a, 0);
            let cur = em.b.use_var(acc);
            let nv = vector(em, cur, v);
            em.b.def_var(acc, nv);
        });
        let accv = em.b.use_var(acc);
        let mut r = lanes(em, accv);
        for s in s4..s_n {
            let v = em.ld1(xb, (s * 4) as i32);
            r = scalar(em, r, v);
        }
        let r = finish(em, r);
        let rv = em.splat(r);
        let z0 = em.ic(0);
        let y = em.epi(epi, rv, n, c, z0, false);
        let y = em.lane0(y);
        let ob = em.vbase(out, n);
        let a = em.ea(ob, c);
        em.st(y, a, 0);
    });
}
