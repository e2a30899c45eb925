//! Convs read in place by the assembled kernels: direct, tap-masked and channel-vectorised
//! (see `KernelKind::DirectConv`).

use super::*;

/// A direct conv kernel's parameters (see `KernelKind::DirectConv`).
pub(super) struct Direct<'a> {
    pub(super) x: &'a View,
    pub(super) g: &'a ConvGeom,
    pub(super) wpack: usize,
    pub(super) kc: usize,
    pub(super) pitch: usize,
    pub(super) plane: usize,
    pub(super) taps: &'a [i32],
    pub(super) nb: usize,
    pub(super) mchunks: usize,
    pub(super) m_major: bool,
    pub(super) tap_masks: Option<crate::plan::TapMaskPlan>,
    pub(super) chanvec: Option<usize>,
    pub(super) vector: Vector,
    pub(super) out: &'a View,
    pub(super) epi: &'a [Epi],
}

/// A conv read in place (see `KernelKind::DirectConv`). A unit is (batch item,
/// group, block of grid positions, chunk of m-tiles), in that order or with the m-chunk
/// first (`m_major`); for each reduction chunk, each m-tile
/// of the unit, each 32-position tile of the block: one assembled kernel call, writing its
/// tile straight into the output (through the row map when the grid has garbage columns).
pub(super) fn emit_direct(
    em: &mut Em,
    d: &Direct,
    lo: Value,
    hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    if let Some(cv) = d.chanvec {
        return emit_direct_chanvec(em, d, cv, lo, hi, get);
    }
    let isa = d.vector;
    let (mr, nr) = (isa.mr(), isa.nr());
    let g = d.g;
    let p_total = g.pixels();
    let grid = (g.oh - 1) * d.pitch + g.ow;
    let pblocks = grid.div_ceil(d.nb);
    let (cin_g, cout_g) = (g.cin_g(), g.cout_g());
    let ntaps = d.taps.len();
    let mtiles = balanced_tiles(cout_g, mr).0;
    let mper = mtiles.div_ceil(d.mchunks);
    let remap = row_map(g, d.pitch);
    let (ops, slots, fused) = fuse_prefix(d.epi, p_total, d.vector);
    let rest = &d.epi[fused..];
    assert!(
        remap.is_none() || rest.is_empty(),
        "a remapped tile needs its whole epilogue fused"
    );
    let ebase = match (remap, d.tap_masks) {
        (Some(m), _) => m.slots_at(),
        (None, Some(_)) => 2,
        (None, None) => 1,
    };
    let steps = d.kc / ntaps;
    em.lp(lo, hi, 1, |em, u| {
        let (n, gi, pb, mci) = if d.m_major {
            let (t, pb) = em.divmod(u, pblocks);
            let (mci, t2) = em.divmod(t, d.x.n * g.groups);
            let (n, gi) = em.divmod(t2, g.groups);
            (n, gi, pb, mci)
        } else {
            let (t, mci) = em.divmod(u, d.mchunks);
            let (t2, pb) = em.divmod(t, pblocks);
            let (n, gi) = em.divmod(t2, g.groups);
            (n, gi, pb, mci)
        };
        let q0 = em.mul_i(pb, d.nb as i64);
        let gv = em.ic(grid as i64);
        let left = em.b.ins().isub(gv, q0);
        let nbv = em.ic(d.nb as i64);
        let nq = em.b.ins().smin(left, nbv);
        let xb = em.vbase(d.x, n);
        let gofs = em.mul_i(gi, (cin_g * d.plane) as i64);
        let xb = em.ea(xb, gofs);
        let ob = em.vbase(d.out, n);
        let ss = em.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            ((ebase + slots.len()) * 8) as u32,
            3,
        ));
        let ep = em.b.ins().stack_addr(I64, ss, 0);
        let ldc = em.ic((p_total * 4) as i64);
        let nfull = em.b.ins().udiv_imm_u(nq, nr as i64);
        let nfr = em.mul_i(nfull, nr as i64);
        let rem = em.b.ins().isub(nq, nfr);
        let ntiles = em.add_i(nq, nr as i64 - 1);
        let ntiles = em.b.ins().udiv_imm_u(ntiles, nr as i64);
        let m_lo = em.mul_i(mci, mper as i64);
        let m_hi = em.add_i(m_lo, mper as i64);
        let mt_n = em.ic(mtiles as i64);
        let m_hi = em.b.ins().smin(m_hi, mt_n);
        let cx = DirectCtx {
            d,
            ops: &ops,
            slots: &slots,
            rest,
            ss,
            ep,
            ebase,
            ldc,
            n,
            gi,
            q0,
            xb,
            ob,
            nfull,
            rem,
            ntiles,
        };
        for_each_chunk(em, cin_g, steps, &mut |em, s0, slen, acc, last| {
            for_each_mtile(em, cout_g, mr, m_lo, m_hi, &mut |em, mt, rows| {
                direct_tile(em, &cx, &mut *get, mt, rows, s0, slen, acc, last)
            });
        });
    });
}

/// A channel-vectorised direct conv (see `isa/x64/asm/chanvec.rs`): a unit is (batch item, group,
/// tile of 32 output channels); for each reduction chunk, each output row, each run of up to
/// `cv` pixels of it: one assembled kernel call.
pub(super) fn emit_direct_chanvec(
    em: &mut Em,
    d: &Direct,
    cv: usize,
    lo: Value,
    hi: Value,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
) {
    let g = d.g;
    let p_total = g.pixels();
    let (cin_g, cout_g) = (g.cin_g(), g.cout_g());
    let ntaps = d.taps.len();
    let k = cin_g * ntaps;
    let ct_n = cout_g.div_ceil(CV_CHANNELS);
    let (ops, slots, fused) = fuse_prefix(d.epi, p_total, d.vector);
    let rest = &d.epi[fused..];
    let steps = d.kc / ntaps;
    em.lp(lo, hi, 1, |em, u| {
        let (t, ct) = em.divmod(u, ct_n);
        let (n, gi) = em.divmod(t, g.groups);
        let xb = em.vbase(d.x, n);
        let gofs = em.mul_i(gi, (cin_g * d.plane) as i64);
        let xb = em.ea(xb, gofs);
        let ob = em.vbase(d.out, n);
        let ss = em.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            ((2 + slots.len()) * 8) as u32,
            3,
        ));
        let ep = em.b.ins().stack_addr(I64, ss, 0);
        let ldc = em.ic((p_total * 4) as i64);
        let gco = em.mul_i(gi, cout_g as i64);
        let cto = em.mul_i(ct, CV_CHANNELS as i64);
        let co = em.b.ins().iadd(gco, cto);
        let wt = em.mul_i(gi, chanvec_group_floats(cout_g, k) as i64);
        let wt2 = em.mul_i(ct, (k * CV_CHANNELS) as i64);
        let wt = em.b.ins().iadd(wt, wt2);
        let wb = em.wptr(d.wpack);
        let wtile = em.ea(wb, wt);
        let cp = em.mul_i(co, p_total as i64);
        let cbase = em.ea(ob, cp);
        // The whole unit for a tile of `chans` channels (the last one may be partial).
        let body =
            |em: &mut Em, get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef, chans: usize| {
                let nv = chans.div_ceil(16);
                let masked = !chans.is_multiple_of(16);
                if masked {
                    let nc = em.ic(chans as i64);
                    em.b.ins().stack_store(I64, nc, ss, 0);
                }
                let mut res = None;
                for (i, sl) in slots.iter().enumerate() {
                    let off = (8 * (2 + i)) as i32;
                    match sl {
                        Slot::Chan(o) => {
                            let b = em.wptr(*o);
                            let a = em.ea(b, co);
                            em.b.ins().stack_store(I64, a, ss, off);
                        }
                        Slot::Res(v) => {
                            let base = em.vbase(v, n);
                            res = Some((em.ea(base, cp), off));
                        }
                    }
                }
                let mut phase = |em: &mut Em, s0: Value, slen: usize, acc: bool, last: bool| {
                    let wo = em.mul_i(s0, (ntaps * nv * 16) as i64);
                    let wpanel = em.ea(wtile, wo);
                    let xo = em.mul_i(s0, d.plane as i64);
                    let xk = em.ea(xb, xo);
                    let kv = em.ic(slen as i64);
                    // Tiles of consecutive output pixels (balanced, at most `cv` each;
                    // unrolled: these images are small), reading the input through the
                    // grid pitch.
                    let ntile = p_total.div_ceil(cv);
                    for ti in 0..ntile {
                        let (p0, p1) = (ti * p_total / ntile, (ti + 1) * p_total / ntile);
                        let grid = |p: usize| ((p / g.ow) * d.pitch + p % g.ow) as i32;
                        let spec = Spec {
                            mr: p1 - p0,
                            nv,
                            masked,
                            accumulate: acc,
                            xstride: d.plane,
                            taps: d.taps.to_vec(),
                            chanvec: true,
                            xoffs: (p0..p1).map(|p| grid(p) - grid(p0)).collect(),
                            partial: !last,
                            ops: if last { ops.clone() } else { Vec::new() },
                            ..Spec::new(d.vector)
                        };
                        let f = get(&spec, em.b.func);
                        // Tile ti's partial sums live in this thread's scratch.
                        let pt = em.add_i(em.scratch, (ti * CV_TILE_FLOATS * 4) as i64);
                        em.b.ins().stack_store(I64, pt, ss, 8);
                        let xp = em.add_i(xk, grid(p0) as i64 * 4);
                        let c = em.add_i(cbase, (p0 * 4) as i64);
                        if let (true, Some((ra, off))) = (last, res) {
                            let r = em.add_i(ra, (p0 * 4) as i64);
                            em.b.ins().stack_store(I64, r, ss, off);
                        }
                        em.b.ins().call(f, &[wpanel, xp, c, kv, ldc, ep]);
                        if last && !rest.is_empty() {
                            let pv = em.ic(p0 as i64);
                            let cols = Cols::Const(p1 - p0);
                            post_epi(em, rest, ob, n, co, chans, pv, p_total, cols);
                        }
                    }
                };
                for_each_chunk(em, cin_g, steps, &mut phase);
            };
        let edge = cout_g % CV_CHANNELS;
        if edge == 0 {
            body(em, &mut *get, CV_CHANNELS);
        } else {
            let is_last = em.b.ins().icmp_imm_s(IntCC::Equal, ct, (ct_n - 1) as i64);
            // Both branches declare kernels through `get`, one after the other.
            let get = std::cell::RefCell::new(&mut *get);
            em.if_else(
                is_last,
                |em| body(em, &mut **get.borrow_mut(), edge),
                |em| body(em, &mut **get.borrow_mut(), CV_CHANNELS),
            );
        }
    });
}

/// Per-unit state of a direct conv (see [`emit_direct`]).
pub(super) struct DirectCtx<'a> {
    pub(super) d: &'a Direct<'a>,
    pub(super) ops: &'a [EpOp],
    pub(super) slots: &'a [Slot],
    pub(super) rest: &'a [Epi],
    pub(super) ss: cranelift_codegen::ir::StackSlot,
    pub(super) ep: Value,
    /// First epilogue slot in `ep` (after the row map when remapping).
    pub(super) ebase: usize,
    pub(super) ldc: Value,
    pub(super) n: Value,
    pub(super) gi: Value,
    /// First grid position of the unit's block; tiles in it: full ones, the columns of the
    /// partial one, and all of them.
    pub(super) q0: Value,
    pub(super) xb: Value,
    pub(super) ob: Value,
    pub(super) nfull: Value,
    pub(super) rem: Value,
    pub(super) ntiles: Value,
}

/// One m-tile (`rows` output channels from tile `mt`) over every tile of the unit's block,
/// reduction steps `s0 .. s0 + slen` (an input channel and its taps per step).
#[allow(clippy::too_many_arguments)]
pub(super) fn direct_tile(
    em: &mut Em,
    cx: &DirectCtx,
    get: &mut dyn FnMut(&Spec, &mut Function) -> FuncRef,
    mt: Value,
    rows: usize,
    s0: Value,
    slen: usize,
    acc: bool,
    last: bool,
) {
    let d = cx.d;
    let g = d.g;
    let isa = d.vector;
    let (mr, nr) = (isa.mr(), isa.nr());
    let p_total = g.pixels();
    let ntaps = d.taps.len();
    let k = g.cin_g() * ntaps;
    let cout_g = g.cout_g();
    let remap = row_map(g, d.pitch);
    let cog = mtile_start(em, mt, cout_g, mr);
    let gco = em.mul_i(cx.gi, cout_g as i64);
    let co = em.b.ins().iadd(gco, cog);
    // Weights: [group][mtile][k][rows], tile mt at its first row * k, from step s0.
    let wo = em.mul_i(cx.gi, (cout_g * k) as i64);
    let wo2 = em.mul_i(cog, k as i64);
    let wo = em.b.ins().iadd(wo, wo2);
    let wo3 = em.mul_i(s0, (ntaps * rows) as i64);
    let wo = em.b.ins().iadd(wo, wo3);
    let wb = em.wptr(d.wpack);
    let wpanel = em.ea(wb, wo);
    let xo = em.mul_i(s0, d.plane as i64);
    let xk = em.ea(cx.xb, xo);
    let cp = em.mul_i(co, p_total as i64);
    let crow = em.ea(cx.ob, cp);
    let mut res = None;
    if last {
        for (i, s) in cx.slots.iter().enumerate() {
            let off = (8 * (cx.ebase + i)) as i32;
            match s {
                Slot::Chan(o) => {
                    let b = em.wptr(*o);
                    let a = em.ea(b, co);
                    em.b.ins().stack_store(I64, a, cx.ss, off);
                }
                Slot::Res(v) => {
                    let base = em.vbase(v, cx.n);
                    res = Some((em.ea(base, cp), off));
                }
            }
        }
    }
    let ops = if last { cx.ops.to_vec() } else { Vec::new() };
    let rest = if last { cx.rest } else { &[][..] };
    let kv = em.ic(slen as i64);
    // Tile `j` of the block: grid position q = q0 + j*nr.
    let call = |em: &mut Em, f: FuncRef, j: Value, cols: Cols| {
        let jq = em.mul_i(j, nr as i64);
        let q = em.b.ins().iadd(cx.q0, jq);
        let xp = em.ea(xk, q);
        let c = em.ea(crow, q);
        if let Some((ra, off)) = res {
            let r = em.ea(ra, q);
            em.b.ins().stack_store(I64, r, cx.ss, off);
        }
        if let Some(m) = remap {
            store_row_map(em, cx, g, d.pitch, m.pieces, q);
        }
        if let Some(crate::plan::TapMaskPlan { table, .. }) = d.tap_masks {
            // The tile's masks: one word per tap, tiles of nr positions.
            let tile = em.b.ins().ushr_imm_u(q, nr.trailing_zeros() as i64);
            let at = em.mul_i(tile, ntaps as i64);
            let base = em.wptr(table);
            let masks = em.ea(base, at);
            em.b.ins().stack_store(I64, masks, cx.ss, 8);
        }
        em.b.ins().call(f, &[wpanel, xp, c, kv, cx.ldc, cx.ep]);
        if !rest.is_empty() {
            post_epi(em, rest, cx.ob, cx.n, co, rows, q, p_total, cols);
        }
    };
    let spec_masks = |nv: usize, masked: bool, tap_masks: TapMasks| Spec {
        mr: rows,
        nv,
        masked,
        accumulate: acc,
        xstride: d.plane,
        taps: d.taps.to_vec(),
        remap,
        prefetch_x: true,
        tap_masks,
        ops: ops.clone(),
        ..Spec::new(isa)
    };
    let z = em.ic(0);
    if remap.is_some() {
        let f = get(&spec_masks(isa.nv(), false, TapMasks::Off), em.b.func);
        em.lp(z, cx.ntiles, 1, |em, j| call(em, f, j, Cols::Const(nr)));
        return;
    }
    if d.tap_masks.is_none() {
        let spec = |nv, masked| spec_masks(nv, masked, TapMasks::Off);
        full_tiles_then_masked(em, isa, cx.nfull, cx.rem, cx.ss, &spec, get, &call);
        return;
    }
    // Tap-masked: full tiles whose every tap stays inside the channel plane load whole
    // vectors (with a window of up to 3 columns their masks are loaded once, by column);
    // the others (top and bottom rows, the partial last tile) mask their loads.
    let inner_masks = match d.tap_masks.and_then(|m| m.by_column) {
        Some(kw) => TapMasks::FmasByColumn(kw),
        None => TapMasks::Fmas,
    };
    let inner = get(&spec_masks(isa.nv(), false, inner_masks), em.b.func);
    let edge = get(
        &spec_masks(isa.nv(), false, TapMasks::FmasAndLoads),
        em.b.func,
    );
    let (q_min, q_max) = crate::plan::interior_tiles(d.taps, d.plane, nr);
    em.lp(z, cx.nfull, 1, |em, j| {
        let jq = em.mul_i(j, nr as i64);
        let q = em.b.ins().iadd(cx.q0, jq);
        let above =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, q, q_min);
        let below =
            em.b.ins()
                .icmp_imm_s(IntCC::SignedLessThanOrEqual, q, q_max);
        let interior = em.b.ins().band(above, below);
        em.if_else(
            interior,
            |em| call(em, inner, j, Cols::Const(nr)),
            |em| call(em, edge, j, Cols::Const(nr)),
        );
    });
    let spec = |nv, masked| spec_masks(nv, masked, TapMasks::FmasAndLoads);
    masked_tail(em, isa, cx.nfull, cx.rem, cx.ss, &spec, get, &call);
}

/// The row map of a direct conv's tiles: none when the grid has no garbage columns,
/// else the gap and how many grid rows a 16-lane vector can span (the planner only picks
/// pitches of at least 8, so at most 3).
pub(super) fn row_map(g: &ConvGeom, pitch: usize) -> Option<Remap> {
    let gap = pitch - g.ow;
    (gap > 0).then(|| Remap {
        gap: (gap * 4) as i32,
        pieces: if pitch >= 16 { 2 } else { 3 },
    })
}

/// Writes the row map of the remapped tile at grid position `q` into `ep` (see the `asm`
/// module): for each of its two vectors, the byte offset that moves lanes of the vector's
/// first grid row to their output places, and per grid row `b` the mask of its lanes
/// (dropping garbage columns and positions past the grid): lane `l` at column `ox + l` is
/// in row `b` when `b*pitch <= ox + l < b*pitch + ow`.
pub(super) fn store_row_map(
    em: &mut Em,
    cx: &DirectCtx,
    g: &ConvGeom,
    pitch: usize,
    pieces: usize,
    q: Value,
) {
    let gap = (pitch - g.ow) as i64;
    let grid = ((g.oh - 1) * pitch + g.ow) as i64;
    let clamp = |em: &mut Em, v: Value| {
        let z = em.ic(0);
        let s = em.ic(16);
        let v = em.b.ins().smax(v, z);
        em.b.ins().smin(v, s)
    };
    // (1 << n) - 1 for n in 0..=16.
    let bits = |em: &mut Em, n: Value| {
        let one = em.ic(1);
        let p = em.b.ins().ishl(one, n);
        em.add_i(p, -1)
    };
    let mut masks = Vec::new();
    for j in 0..2i64 {
        let qv = em.add_i(q, 16 * j);
        let (oy, ox) = em.divmod(qv, pitch);
        let gv = em.ic(grid);
        let to_end = em.b.ins().isub(gv, qv);
        for b in 0..pieces as i64 {
            let start = em.ic(b * pitch as i64);
            let start = em.b.ins().isub(start, ox);
            let lo = clamp(em, start);
            let hi = em.add_i(start, g.ow as i64);
            let hi = em.b.ins().smin(hi, to_end);
            let hi = clamp(em, hi);
            let hb = bits(em, hi);
            let lb = bits(em, lo);
            masks.push(em.b.ins().band_not(hb, lb));
        }
        let off = em.mul_i(oy, -gap * 4);
        em.b.ins().stack_store(I64, off, cx.ss, (8 + 8 * j) as i32);
    }
    for (w, chunk) in masks.chunks(4).enumerate() {
        let mut word = chunk[0];
        for (i, &m) in chunk.iter().enumerate().skip(1) {
            let sh = em.b.ins().ishl_imm_u(m, 16 * i as i64);
            word = em.b.ins().bor(word, sh);
        }
        em.b.ins()
            .stack_store(I64, word, cx.ss, (24 + 8 * w) as i32);
    }
}
