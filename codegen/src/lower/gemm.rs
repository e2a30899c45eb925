//! Convs as GEMMs on packed panels (im2col), with the Cranelift 8x4 microkernel or the
//! assembled ones, and the epilogue code shared by every tiled kernel.

use super::*;

/// How a GEMM kernel gets its microkernels: the fallback function, or the assembled
/// variants (declared on demand through `wide`).
pub(crate) struct Micro<'a> {
    pub fallback: Option<FuncRef>,
    pub wide: &'a mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn emit_gemm(
    em: &mut Em,
    io: &Io,
    g: &ConvGeom,
    wpack: usize,
    nb: usize,
    mchunks: usize,
    wide: Option<Vector>,
    kc: usize,
    micro: &mut Micro,
) {
    let Io {
        x,
        out,
        epi,
        lo,
        hi,
    } = *io;
    let k = g.kdim();
    let p_total = g.pixels();
    let pblocks = p_total.div_ceil(nb);
    let cin_g = g.cin_g();
    let cout_g = g.cout_g();
    let (mr, nr) = match wide {
        Some(isa) => (isa.mr(), isa.nr()),
        None => (MR, NR),
    };
    // 4-pixel groups per panel of `nr` pixels.
    let gpp = nr / 4;
    let mtiles = cout_g.div_ceil(mr);
    let mper = mtiles.div_ceil(mchunks);
    let [kh, kw] = g.kernel;
    let (h, w) = (g.h, g.w);
    let tile_off = (nb * k * 4) as i64;
    em.lp(lo, hi, 1, |em, u| {
        let (t, mci) = em.divmod(u, mchunks);
        let (t2, pb) = em.divmod(t, pblocks);
        let (n, gi) = em.divmod(t2, g.groups);
        let p0 = em.mul_i(pb, nb as i64);
        let rem = em.ic(p_total as i64);
        let rem = em.b.ins().isub(rem, p0);
        let nbv = em.ic(nb as i64);
        let npix = em.b.ins().smin(rem, nbv);
        // Groups of 4 pixels to pack: whole panels, so no lane of a panel is stale.
        let npr = em.add_i(npix, nr as i64 - 1);
        let npanels = em.b.ins().udiv_imm_u(npr, nr as i64);
        let nsub = em.mul_i(npanels, gpp as i64);
        let xb = em.vbase(x, n);
        // With a channel table the group's input channels are found through it
        // (`ConvGeom::chan`).
        let gofs = match g.chan {
            None => em.mul_i(gi, (cin_g * h * w) as i64),
            Some(_) => em.ic(0),
        };
        let xb = em.ea(xb, gofs);
        let chan = g.chan.map(|t| {
            let t = em.wptr(t);
            let o = em.mul_i(gi, (cin_g * 4) as i64);
            em.b.ins().iadd(t, o)
        });
        // Byte offset of the group's input channel `ci` from its channel 0.
        let row = move |em: &mut Em, ci: Value| -> Value {
            let Some(t) = chan else {
                return em.mul_i(ci, (h * w * 4) as i64);
            };
            let a = em.ea(t, ci);
            let c = em.b.ins().load(I32, ro(), a, 0);
            let c = em.b.ins().uextend(I64, c);
            em.mul_i(c, (h * w * 4) as i64)
        };
        let scratch = if wide.is_some() {
            // 64-byte aligned panels (the scratch slot has 16 floats of slack).
            let a = em.add_i(em.scratch, 63);
            em.b.ins().band_imm_s(a, !63i64)
        } else {
            em.scratch
        };
        let ptot = em.ic(p_total as i64);
        // Start of 4-pixel group `q`: panel q / gpp, columns 4 * (q % gpp).., k-rows of nr.
        let group_base = |em: &mut Em, q: Value| -> Value {
            if gpp == 1 {
                let o = em.mul_i(q, (k * nr * 4) as i64);
                return em.b.ins().iadd(scratch, o);
            }
            let (pi, gq) = em.divmod(q, gpp);
            let o = em.mul_i(pi, (k * nr * 4) as i64);
            let o2 = em.mul_i(gq, 16);
            let o = em.b.ins().iadd(o, o2);
            em.b.ins().iadd(scratch, o)
        };
        // ---- pack the input block: panel `sub` holds pixels p0+4*sub.. as [k][4] ----
        if g.is_pointwise() {
            let z = em.ic(0);
            em.lp(z, nsub, 1, |em, sub| {
                let sub4 = em.mul_i(sub, 4);
                let p = em.b.ins().iadd(p0, sub4);
                let panel = group_base(em, sub);
                let p4 = em.add_i(p, 4);
                let full = em.b.ins().icmp(IntCC::SignedLessThanOrEqual, p4, ptot);
                let xp = em.ea(xb, p);
                em.if_else(
                    full,
                    |em| {
                        em.lpc(0, k, 1, |em, ci| {
                            let o = row(em, ci);
                            let a = em.b.ins().iadd(xp, o);
                            let v = em.ld4(a, 0);
                            let o2 = em.mul_i(ci, (nr * 4) as i64);
                            let d = em.b.ins().iadd(panel, o2);
                            em.st(v, d, 0);
                        });
                    },
                    |em| {
                        let zero = em.fc(0.0);
                        em.lpc(0, k, 1, |em, ci| {
                            let o = row(em, ci);
                            let a = em.b.ins().iadd(xp, o);
                            let o2 = em.mul_i(ci, (nr * 4) as i64);
                            let d = em.b.ins().iadd(panel, o2);
                            for lane in 0..4i64 {
                                let pl = em.add_i(p, lane);
                                let inb = em.b.ins().icmp(IntCC::SignedLessThan, pl, ptot);
                                let la = em.add_i(a, lane * 4);
                                let sa = em.b.ins().select(inb, la, xb);
                                let v = em.ld1(sa, 0);
                                let v = em.b.ins().select(inb, v, zero);
                                em.st(v, d, (lane * 4) as i32);
                            }
                        });
                    },
                );
            });
        } else {
            let z = em.ic(0);
            let [sh, sw] = g.stride;
            let [dh, dw] = g.dilation;
            em.lp(z, nsub, 1, |em, sub| {
                let q0 = em.mul_i(sub, 4);
                let p = em.b.ins().iadd(p0, q0);
                let (oy, ox) = em.divmod(p, g.ow);
                let iy0 = em.mul_i(oy, sh as i64);
                let iy0 = em.add_i(iy0, -(g.pad[0] as i64));
                let ix0 = em.mul_i(ox, sw as i64);
                let ix0 = em.add_i(ix0, -(g.pad[1] as i64));
                // Fast path: the 4 pixels lie in one output row and every tap of all of
                // them is inside the input, so no bounds checks (and for stride 1 one
                // vector load per tap).
                let p4 = em.add_i(p, 4);
                let c1 = em.b.ins().icmp(IntCC::SignedLessThanOrEqual, p4, ptot);
                let c2 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, ox, g.ow as i64 - 3);
                let c3 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, iy0, 0);
                let iy_last = em.add_i(iy0, ((kh - 1) * dh) as i64);
                let c4 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, iy_last, h as i64);
                let c5 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, ix0, 0);
                let ix_last = em.add_i(ix0, (3 * sw + (kw - 1) * dw) as i64);
                let c6 =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThan, ix_last, w as i64);
                let a = em.b.ins().band(c1, c2);
                let b_ = em.b.ins().band(c3, c4);
                let c = em.b.ins().band(c5, c6);
                let ab = em.b.ins().band(a, b_);
                let fast = em.b.ins().band(ab, c);
                let panel = group_base(em, sub);
                em.if_else(
                    fast,
                    |em| {
                        let ro_ = em.mul_i(iy0, w as i64);
                        let o = em.b.ins().iadd(ro_, ix0);
                        let base = em.ea(xb, o);
                        em.lpc(0, cin_g, 1, |em, ci| {
                            let cho = row(em, ci);
                            let chb = em.b.ins().iadd(base, cho);
                            let dk = em.mul_i(ci, (kh * kw * nr * 4) as i64);
                            let dci = em.b.ins().iadd(panel, dk);
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let src = ((ky * dh * w + kx * dw) * 4) as i32;
                                    let dst = (((ky * kw + kx) * nr) * 4) as i32;
                                    if sw == 1 {
                                        let v = em.ld4(chb, src);
                                        em.st(v, dci, dst);
                                    } else {
                                        for l in 0..4 {
                                            let v = em.ld1(chb, src + (l * sw * 4) as i32);
                                            em.st(v, dci, dst + (l * 4) as i32);
                                        }
                                    }
                                }
                            }
                        });
                    },
                    |em| {
                        let z = em.ic(0);
                        let four = em.ic(4);
                        em.lp(z, four, 1, |em, lane| {
                            let q = em.b.ins().iadd(q0, lane);
                            let p = em.b.ins().iadd(p0, q);
                            let valid = em.b.ins().icmp(IntCC::SignedLessThan, p, ptot);
                            let (oy, ox) = em.divmod(p, g.ow);
                            let iy0 = em.mul_i(oy, sh as i64);
                            let iy0 = em.add_i(iy0, -(g.pad[0] as i64));
                            let ix0 = em.mul_i(ox, sw as i64);
                            let ix0 = em.add_i(ix0, -(g.pad[1] as i64));
                            let dst0 = em.ea(panel, lane);
                            // Column bounds for each kx (independent of ci, ky).
                            let mut col_ok = Vec::new();
                            for kx in 0..kw {
                                let ix = em.add_i(ix0, (kx * dw) as i64);
                                let ok = em.in_range(ix, w);
                                let ok = em.b.ins().band(ok, valid);
                                col_ok.push((ix, ok));
                            }
                            em.lpc(0, cin_g, 1, |em, ci| {
                                let fillv = match g.fill {
                                    Some(f) => {
                                        let fp = em.wptr(f);
                                        let gc = em.mul_i(gi, cin_g as i64);
                                        let ch = em.b.ins().iadd(gc, ci);
                                        let a = em.ea(fp, ch);
                                        em.b.ins().load(F32, ro(), a, 0)
                                    }
                                    None => em.fc(0.0),
                                };
                                let cho = row(em, ci);
                                let chb = em.b.ins().iadd(xb, cho);
                                let dk = em.mul_i(ci, (kh * kw * nr * 4) as i64);
                                let dci = em.b.ins().iadd(dst0, dk);
                                for ky in 0..kh {
                                    let iy = em.add_i(iy0, (ky * dh) as i64);
                                    let rok = em.in_range(iy, h);
                                    let ro_ = em.mul_i(iy, w as i64);
                                    for (kx, &(ix, cok)) in col_ok.iter().enumerate() {
                                        let inb = em.b.ins().band(rok, cok);
                                        let idx = em.b.ins().iadd(ro_, ix);
                                        let a = em.ea(chb, idx);
                                        let a = em.b.ins().select(inb, a, xb);
                                        let v = em.ld1(a, 0);
                                        let v = em.b.ins().select(inb, v, fillv);
                                        em.st(v, dci, (((ky * kw + kx) * nr) * 4) as i32);
                                    }
                                }
                            });
                        });
                    },
                );
            });
        }
        // ---- multiply: m-tiles of this chunk x pixel panels ----
        let m_lo = em.mul_i(mci, mper as i64);
        let m_hi = em.add_i(m_lo, mper as i64);
        let mt_n = em.ic(mtiles as i64);
        let m_hi = em.b.ins().smin(m_hi, mt_n);
        if let Some(isa) = wide {
            let t = WideTile {
                isa,
                k,
                kc,
                cout_g,
                p_total,
                wpack,
                out,
                epi,
                n,
                gi,
                p0,
                npix,
                panels: scratch,
            };
            wide_multiply(em, &t, m_lo, m_hi, micro.wide);
            return;
        }
        let ukernel = micro.fallback.expect("fallback GEMM needs the microkernel");
        let tile = em.add_i(scratch, tile_off);
        let kv = em.ic(k as i64);
        let ob = em.vbase(out, n);
        em.lp(m_lo, m_hi, 1, |em, mt| {
            let gm = em.mul_i(gi, mtiles as i64);
            let gm = em.b.ins().iadd(gm, mt);
            let wo = em.mul_i(gm, (k * MR * 4) as i64);
            let wp = em.wptr(wpack);
            let wpanel = em.b.ins().iadd(wp, wo);
            let z = em.ic(0);
            em.lp(z, nsub, 1, |em, sub| {
                let po = em.mul_i(sub, (k * NR * 4) as i64);
                let xpanel = em.b.ins().iadd(scratch, po);
                em.b.ins().call(ukernel, &[wpanel, xpanel, tile, kv]);
                let sub4 = em.mul_i(sub, 4);
                let p = em.b.ins().iadd(p0, sub4);
                let left = em.b.ins().isub(ptot, p);
                let full =
                    em.b.ins()
                        .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, 4);
                let mt8 = em.mul_i(mt, MR as i64);
                let gco = em.mul_i(gi, cout_g as i64);
                for r in 0..MR {
                    let co = em.add_i(mt8, r as i64);
                    let row = |em: &mut Em| {
                        let cg = em.b.ins().iadd(gco, co);
                        let v = em.ld4(tile, (r * NR * 4) as i32);
                        let cp = em.mul_i(cg, p_total as i64);
                        let idx = em.b.ins().iadd(cp, p);
                        let oa = em.ea(ob, idx);
                        em.if_else(
                            full,
                            |em| {
                                let y = em.epi(epi, v, n, cg, p, true);
                                em.st(y, oa, 0);
                            },
                            |em| em.store_lanes_epi(epi, v, left, oa, n, cg, p),
                        );
                    };
                    if !cout_g.is_multiple_of(MR) {
                        let ok =
                            em.b.ins()
                                .icmp_imm_s(IntCC::SignedLessThan, co, cout_g as i64);
                        em.if_(ok, row);
                    } else {
                        row(em);
                    }
                }
            });
        });
    });
}

/// One GEMM unit's state for the wide path (see [`wide_multiply`]).
pub(super) struct WideTile<'a> {
    pub(super) isa: Vector,
    pub(super) k: usize,
    pub(super) kc: usize,
    pub(super) cout_g: usize,
    pub(super) p_total: usize,
    pub(super) wpack: usize,
    pub(super) out: &'a View,
    pub(super) epi: &'a [Epi],
    pub(super) n: Value,
    pub(super) gi: Value,
    /// First pixel of the block, pixels in it, and the packed panels `[panel][k][nr]`.
    pub(super) p0: Value,
    pub(super) npix: Value,
    pub(super) panels: Value,
}

/// Column count of a tile for [`post_epi`].
#[derive(Clone, Copy)]
pub(super) enum Cols {
    Const(usize),
    Dyn(Value),
}

/// Applies `epi` in place to a stored tile: `rows` channels from `co`, pixels `p..p+cols`.
#[allow(clippy::too_many_arguments)]
pub(super) fn post_epi(
    em: &mut Em,
    epi: &[Epi],
    ob: Value,
    n: Value,
    co: Value,
    rows: usize,
    p: Value,
    p_total: usize,
    cols: Cols,
) {
    em.lpc(0, rows, 1, |em, r| {
        let c = em.b.ins().iadd(co, r);
        let cp = em.mul_i(c, p_total as i64);
        let idx = em.b.ins().iadd(cp, p);
        let rowa = em.ea(ob, idx);
        let vec = |em: &mut Em, j: Value| {
            let a = em.ea(rowa, j);
            let v = em.ld4(a, 0);
            let s = em.b.ins().iadd(p, j);
            let y = em.epi(epi, v, n, c, s, true);
            em.st(y, a, 0);
        };
        match cols {
            Cols::Const(nc) => {
                em.lpc(0, nc / 4 * 4, 4, vec);
                for j in nc / 4 * 4..nc {
                    let jv = em.ic(j as i64);
                    scalar_epi(em, epi, rowa, jv, n, c, p);
                }
            }
            Cols::Dyn(cnt) => {
                let c4 = em.b.ins().band_imm_s(cnt, !3i64);
                let z = em.ic(0);
                em.lp(z, c4, 4, vec);
                for lane in 0..3 {
                    let j = em.add_i(c4, lane);
                    let ok = em.b.ins().icmp(IntCC::SignedLessThan, j, cnt);
                    em.if_(ok, |em| scalar_epi(em, epi, rowa, j, n, c, p));
                }
            }
        }
    });
}

pub(super) fn scalar_epi(
    em: &mut Em,
    epi: &[Epi],
    rowa: Value,
    j: Value,
    n: Value,
    c: Value,
    p: Value,
) {
    let a = em.ea(rowa, j);
    let x = em.ld1(a, 0);
    let xv = em.splat(x);
    let s = em.b.ins().iadd(p, j);
    let y = em.epi(epi, xv, n, c, s, false);
    let y = em.lane0(y);
    em.st(y, a, 0);
}

/// Pointers and constants shared by every tile of one wide GEMM unit.
pub(super) struct WideCtx {
    pub(super) ops: Vec<EpOp>,
    pub(super) slots: Vec<Slot>,
    pub(super) fused: usize,
    pub(super) ss: cranelift_codegen::ir::StackSlot,
    pub(super) ep: Value,
    pub(super) ldc: Value,
    pub(super) ob: Value,
    pub(super) nfull: Value,
    pub(super) rem: Value,
}

/// The multiply of one wide GEMM unit: for each K chunk, for each m-tile of this unit's
/// range, for each pixel panel of the block, one assembled microkernel call writing its
/// tile straight into the output (the first chunk from zero, later chunks accumulating;
/// the last one applies the fused epilogue, then Cranelift code the unfused rest).
pub(super) fn wide_multiply(
    em: &mut Em,
    t: &WideTile,
    m_lo: Value,
    m_hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let isa = t.isa;
    let (mr, nr) = (isa.mr(), isa.nr());
    let (ops, slots, fused) = fuse_prefix(t.epi, t.p_total, t.isa);
    let ss = em.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        ((1 + slots.len()) * 8) as u32,
        3,
    ));
    let ep = em.b.ins().stack_addr(I64, ss, 0);
    let ldc = em.ic((t.p_total * 4) as i64);
    let ob = em.vbase(t.out, t.n);
    let nfull = em.b.ins().udiv_imm_u(t.npix, nr as i64);
    let nfr = em.mul_i(nfull, nr as i64);
    let rem = em.b.ins().isub(t.npix, nfr);
    let cx = WideCtx {
        ops,
        slots,
        fused,
        ss,
        ep,
        ldc,
        ob,
        nfull,
        rem,
    };
    for_each_chunk(em, t.k, t.kc, &mut |em, kc0, klen, acc, last| {
        for_each_mtile(em, t.cout_g, mr, m_lo, m_hi, &mut |em, mt, rows| {
            wide_tile(em, t, &cx, &mut *get, mt, rows, kc0, klen, acc, last)
        });
    });
}

/// Runs `phase(em, start, len, accumulate, last)` over the reduction `0..total` in chunks
/// of `chunk` (the last may be shorter): the first from zero, later ones accumulating onto
/// it, the last also applying the epilogue; the middle chunks are one emitted loop.
pub(super) fn for_each_chunk(
    em: &mut Em,
    total: usize,
    chunk: usize,
    phase: &mut dyn FnMut(&mut Em, Value, usize, bool, bool),
) {
    let chunks = total.div_ceil(chunk);
    let z = em.ic(0);
    if chunks == 1 {
        phase(em, z, total, false, true);
        return;
    }
    phase(em, z, chunk, false, false);
    if chunks > 2 {
        em.lpc(1, chunks - 1, 1, |em, c| {
            let s0 = em.mul_i(c, chunk as i64);
            phase(em, s0, chunk, true, false);
        });
    }
    let s0 = em.ic(((chunks - 1) * chunk) as i64);
    phase(em, s0, total - (chunks - 1) * chunk, true, true);
}

/// Runs `tile(em, mt, rows)` for the balanced m-tiles `m_lo..m_hi` of `m` rows (see
/// `balanced_tiles`): first those of q + 1 rows, then those of q.
pub(super) fn for_each_mtile(
    em: &mut Em,
    m: usize,
    mr: usize,
    m_lo: Value,
    m_hi: Value,
    tile: &mut dyn FnMut(&mut Em, Value, usize),
) {
    let (_, q, rem) = balanced_tiles(m, mr);
    let r = em.ic(rem as i64);
    if rem > 0 {
        let hi = em.b.ins().smin(m_hi, r);
        em.lp(m_lo, hi, 1, |em, mt| tile(em, mt, q + 1));
    }
    let lo = em.b.ins().smax(m_lo, r);
    em.lp(lo, m_hi, 1, |em, mt| tile(em, mt, q));
}

/// First row of balanced m-tile `mt` of `m` rows: `mt * q + min(mt, rem)`.
pub(super) fn mtile_start(em: &mut Em, mt: Value, m: usize, mr: usize) -> Value {
    let (_, q, rem) = balanced_tiles(m, mr);
    let start = em.mul_i(mt, q as i64);
    let extra = em.ic(rem as i64);
    let extra = em.b.ins().smin(mt, extra);
    em.b.ins().iadd(start, extra)
}

/// Calls kernel `full` on tiles `0..nfull`, then on tile `nfull` the narrowest masked
/// variant (`spec(vectors, masked)`) covering its `rem` columns, with `ep[0] = rem`.
#[allow(clippy::too_many_arguments)]
pub(super) fn full_tiles_then_masked(
    em: &mut Em,
    isa: Vector,
    nfull: Value,
    rem: Value,
    ss: cranelift_codegen::ir::StackSlot,
    spec: &dyn Fn(usize, bool) -> Spec,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    call: &dyn Fn(&mut Em, FuncRef, Value, Cols),
) {
    let full = get(&spec(isa.nv(), false), em.b.func);
    let z = em.ic(0);
    em.lp(z, nfull, 1, |em, j| {
        call(em, full, j, Cols::Const(isa.nr()))
    });
    masked_tail(em, isa, nfull, rem, ss, spec, get, call);
}

/// The partial tile after `nfull` full ones (`rem` columns, none when 0): the masked
/// variant with the fewest vectors that covers it.
#[allow(clippy::too_many_arguments)]
pub(super) fn masked_tail(
    em: &mut Em,
    isa: Vector,
    nfull: Value,
    rem: Value,
    ss: cranelift_codegen::ir::StackSlot,
    spec: &dyn Fn(usize, bool) -> Spec,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    call: &dyn Fn(&mut Em, FuncRef, Value, Cols),
) {
    let vl = isa.vl();
    for nv in 1..=isa.nv() {
        let f = get(&spec(nv, true), em.b.func);
        let gt =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThan, rem, ((nv - 1) * vl) as i64);
        let le =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, rem, (nv * vl) as i64);
        let ok = em.b.ins().band(gt, le);
        em.if_(ok, |em| {
            em.b.ins().stack_store(I64, rem, ss, 0);
            call(em, f, nfull, Cols::Dyn(rem));
        });
    }
}

/// One m-tile (`rows` output channels from tile `mt`) against every panel of the block.
#[allow(clippy::too_many_arguments)]
pub(super) fn wide_tile(
    em: &mut Em,
    t: &WideTile,
    cx: &WideCtx,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    mt: Value,
    rows: usize,
    kc0: Value,
    klen: usize,
    acc: bool,
    last: bool,
) {
    let isa = t.isa;
    let (mr, nr) = (isa.mr(), isa.nr());
    let cog = mtile_start(em, mt, t.cout_g, mr);
    let gco = em.mul_i(t.gi, t.cout_g as i64);
    let co = em.b.ins().iadd(gco, cog);
    // Weight micro-panel: [k][rows] from the tile's first row, chunk offset kc0 * rows.
    let wo = em.mul_i(t.gi, (t.cout_g * t.k) as i64);
    let wo2 = em.mul_i(cog, t.k as i64);
    let wo = em.b.ins().iadd(wo, wo2);
    let wo3 = em.mul_i(kc0, rows as i64);
    let wo = em.b.ins().iadd(wo, wo3);
    let wb = em.wptr(t.wpack);
    let wpanel = em.ea(wb, wo);
    let xo = em.mul_i(kc0, nr as i64);
    let xbase = em.ea(t.panels, xo);
    let cpix = em.mul_i(co, t.p_total as i64);
    let cpix = em.b.ins().iadd(cpix, t.p0);
    let crow = em.ea(cx.ob, cpix);
    let ops = if last { cx.ops.clone() } else { Vec::new() };
    let mut res = None;
    if last {
        for (i, s) in cx.slots.iter().enumerate() {
            match s {
                Slot::Chan(off) => {
                    let b = em.wptr(*off);
                    let a = em.ea(b, co);
                    em.b.ins().stack_store(I64, a, cx.ss, (8 * (1 + i)) as i32);
                }
                Slot::Res(v) => {
                    let base = em.vbase(v, t.n);
                    let a = em.ea(base, cpix);
                    res = Some((a, (8 * (1 + i)) as i32));
                }
            }
        }
    }
    let rest = if last { &t.epi[cx.fused..] } else { &[][..] };
    let kv = em.ic(klen as i64);
    let call = |em: &mut Em, f: FuncRef, j: Value, cols: Cols| {
        let xo = em.mul_i(j, (t.k * nr * 4) as i64);
        let xp = em.b.ins().iadd(xbase, xo);
        let co_ = em.mul_i(j, (nr * 4) as i64);
        let c = em.b.ins().iadd(crow, co_);
        if let Some((ra, off)) = res {
            let r = em.b.ins().iadd(ra, co_);
            em.b.ins().stack_store(I64, r, cx.ss, off);
        }
        em.b.ins().call(f, &[wpanel, xp, c, kv, cx.ldc, cx.ep]);
        if !rest.is_empty() {
            let jn = em.mul_i(j, nr as i64);
            let p = em.b.ins().iadd(t.p0, jn);
            post_epi(em, rest, cx.ob, t.n, co, rows, p, t.p_total, cols);
        }
    };
    let spec = |nv: usize, masked: bool| Spec {
        mr: rows,
        nv,
        masked,
        accumulate: acc,
        xstride: nr,
        ops: ops.clone(),
        ..Spec::new(isa)
    };
    full_tiles_then_masked(em, isa, cx.nfull, cx.rem, cx.ss, &spec, get, &call);
}
