//! Channel-vectorised microkernels (AVX-512), for convolutions on small images: vectors run
//! along output channels and the input pixels are broadcast. A pixel-vectorised tile on a
//! 7x7 image fills 49 of its 64 lanes (and the grid of a padded 3x3 wastes more); here every
//! lane is an output channel, and a tile is a run of pixels of one output row.
//!
//! ```text
//! cv_ukernel(w:   *const f32  rdi  weight panel [k*T][nv*16]            (vector loads)
//!            x:   *const f32  rsi  input: pixel r, step s, tap t at
//!                                  x[s*xstride + taps[t] + xoffs[r]]
//!            c:   *mut f32    rdx  tile origin: channel ch, pixel r at c + ch*ldc + 4*r bytes
//!            k:   u64         rcx  >= 1 reduction steps
//!            ldc: i64         r8   bytes between channels of C (and of the residual)
//!            ep:  *const u64  r9   ep[0] = valid channels n (masked variants), ep[1] = the
//!                                  partial-sum tile P ([mr][nv][16] floats, dense),
//!                                  ep[2 + s] = slot s: per-channel vectors at the tile's first
//!                                  channel, the residual at the tile origin)
//!
//! acc[ch][r] = (accumulate ? P[r][ch] : 0)
//!              + sum_{s in 0..k, t in 0..T, in order} w[s*T + t][ch] * x[s*xstride + taps[t] + xoffs[r]]
//! then, with `partial`, P[r][ch] = acc[ch][r] (no epilogue; a later reduction chunk
//! continues), else the epilogue ops (same meaning as in the pixel kernels, with channel
//! ch's per-channel values) and c[ch][r] = acc[ch][r] for ch < n, r < mr
//! ```
//!
//! Partial sums go through the dense tile P rather than C, so the reduction can be cut into
//! chunks whose weight rows stay in L1 across all tiles of a unit without paying a gather and
//! a scatter per chunk: on 7x7 layers the weights (9 MB for a 512-channel 3x3) come from L3
//! once, and their stream is then spread over the compute of every tile.
//!
//! The tile's pixels are consecutive in the output but may span output rows, hence the
//! input offsets `xoffs` (the input's rows have the grid pitch). `mr` (pixels) is 1..=12
//! and `nv` (16-channel vectors) 1..=2; `masked` makes the last
//! vector partial (`n` in `((nv-1)*16, nv*16]`): its weight rows must still be readable
//! (the panels are zero-padded to whole vectors) and nothing is stored past `n`. C and the
//! residual are reached by gather/scatter with the channel stride; with the reductions these
//! kernels are picked for (K in the thousands) that costs a few percent.

use super::*;

pub(super) fn assemble_chanvec(spec: &Spec) -> Result<Vec<u8>, IcedError> {
    let (mr, nv) = (spec.mr, spec.nv);
    assert!(Isa::of(&spec.vector) == Isa::Avx512 && spec.remap.is_none());
    assert!((1..=12).contains(&mr) && (1..=2).contains(&nv) && !spec.taps.is_empty());
    assert_eq!(spec.xoffs.len(), mr);
    let ntaps = spec.taps.len();
    let acc = |r: usize, j: usize| r * nv + j;
    let nacc = mr * nv;
    let w0 = 24; // weight vectors 24..24+nv, then broadcast registers up to 31
    let b0 = w0 + nv;
    let nb = 32 - b0;
    // After the loop: channel index vector, temporaries (activations use 24..=27).
    let (idx, t1, t2) = (28, 30, 31);
    let last = nv - 1;
    let mut v = V {
        a: CodeAssembler::new(64)?,
        isa: Isa::Avx512,
    };
    let table = v.a.create_label();
    let consts: Vec<CodeLabel> = ACT_CONSTS.iter().map(|_| v.a.create_label()).collect();

    // k1 (masked variants): lanes of the last vector; k3: all lanes. k2 is the
    // scatter/gather mask (consumed).
    v.a.kxnorw(k3, k3, k3)?;
    if spec.masked {
        v.a.mov(rax, qword_ptr(r9))?;
        v.a.sub(eax, (last * 16) as u32)?;
        v.a.vpbroadcastd(ZMM[t1], eax)?;
        v.a.vpcmpgtd(k1, ZMM[t1], zmmword_ptr(table))?;
    }
    let lane_mask = |v: &mut V, j: usize| -> Result<(), IcedError> {
        if spec.masked && j == last {
            v.a.kmovw(k2, k1)
        } else {
            v.a.kmovw(k2, k3)
        }
    };
    // r10: tile origin; r11: channel 16 of the tile.
    v.a.mov(r10, rdx)?;
    v.a.mov(r11, r8)?;
    v.a.shl(r11, 4)?;
    v.a.add(r11, rdx)?;
    let cbase = |j: usize| if j == 0 { r10 } else { r11 };

    if spec.accumulate {
        v.a.mov(rax, qword_ptr(r9 + 8))?;
    }
    for r in 0..mr {
        for j in 0..nv {
            if spec.accumulate {
                v.load(acc(r, j), rax + (64 * acc(r, j)) as i32)?;
            } else {
                v.zero(acc(r, j))?;
            }
        }
    }

    // ---- k loop ----
    let xs = (spec.xstride * 4) as i32;
    let row_w = (nv * 64) as i32;
    let mut bi = 0usize;
    let row = |v: &mut V, u: usize, t: usize, bi: &mut usize| -> Result<(), IcedError> {
        let wrow = ((u * ntaps + t) as i32) * row_w;
        for j in 0..nv {
            v.load(w0 + j, rdi + (wrow + 64 * j as i32))?;
            let ahead = (PREFETCH_STEPS as i32) * row_w;
            v.a.prefetcht0(byte_ptr(rdi + (ahead + wrow + 64 * j as i32)))?;
        }
        let xo = u as i32 * xs + spec.taps[t] * 4;
        for r in 0..mr {
            let b = b0 + *bi % nb;
            *bi += 1;
            v.bcst(b, rsi + (xo + spec.xoffs[r] * 4))?;
            for j in 0..nv {
                v.fma231(acc(r, j), w0 + j, b)?;
            }
        }
        Ok(())
    };
    k_loop(&mut v, ntaps, ntaps as i32 * row_w, xs, &mut |v, u, t| {
        row(v, u, t, &mut bi)
    })?;

    if spec.partial {
        v.a.mov(rax, qword_ptr(r9 + 8))?;
        for i in 0..nacc {
            v.store(rax + (64 * i) as i32, i)?;
        }
        v.a.vzeroupper()?;
        return finish(v, table, consts);
    }

    // ---- epilogue and scatters, pixel by pixel ----
    // Channel offsets for the gathers and scatters: lane * ldc (bytes, as dwords; the
    // register is a broadcast register in the k loop, so only now).
    v.a.vpbroadcastd(ZMM[idx], r8d)?;
    v.a.vpmulld(ZMM[idx], ZMM[idx], zmmword_ptr(table))?;
    let slot = |s: u8| r9 + 8 * (2 + s as i32);
    // A per-channel vector j of slot s into register `dst` (masked lanes read as zero).
    let chan = |v: &mut V, s: u8, j: usize, dst: usize| -> Result<(), IcedError> {
        v.a.mov(rax, qword_ptr(slot(s)))?;
        let m = zmmword_ptr(rax + 64 * j as i32);
        if spec.masked && j == last {
            v.a.vmovups(ZMM[dst].k1().z(), m)
        } else {
            v.a.vmovups(ZMM[dst], m)
        }
    };
    if let Some(EpOp::AddRows(s)) = spec.ops.iter().find(|o| matches!(o, EpOp::AddRows(_))) {
        v.a.mov(rsi, qword_ptr(slot(*s)))?;
        v.a.mov(rdi, r8)?;
        v.a.shl(rdi, 4)?;
        v.a.add(rdi, rsi)?;
    }
    for r in 0..mr {
        for op in &spec.ops {
            match *op {
                EpOp::ScaleShift(a, b) => {
                    for j in 0..nv {
                        chan(&mut v, a, j, t1)?;
                        chan(&mut v, b, j, t2)?;
                        v.fma213(acc(r, j), t1, t2)?;
                    }
                }
                EpOp::Scale(a) | EpOp::Shift(a) => {
                    let o = if matches!(op, EpOp::Scale(_)) {
                        b'*'
                    } else {
                        b'+'
                    };
                    for j in 0..nv {
                        chan(&mut v, a, j, t1)?;
                        v.binop(o, acc(r, j), t1)?;
                    }
                }
                EpOp::AddRows(_) => {
                    for j in 0..nv {
                        v.zero(t1)?;
                        lane_mask(&mut v, j)?;
                        let base = if j == 0 { rsi } else { rdi };
                        let m = dword_ptr(base + ZMM[idx] + (r * 4) as i32);
                        v.a.vgatherdps(ZMM[t1].k2(), m)?;
                        v.binop(b'+', acc(r, j), t1)?;
                    }
                }
                EpOp::Max(bits) | EpOp::Min(bits) => {
                    v.bcst_const(t1, bits)?;
                    let o = if matches!(op, EpOp::Max(_)) {
                        b'>'
                    } else {
                        b'<'
                    };
                    for j in 0..nv {
                        v.binop(o, acc(r, j), t1)?;
                    }
                }
                EpOp::Act(f) => {
                    assert!(nacc <= 24);
                    for j in 0..nv {
                        activation(&mut v, f, acc(r, j), &consts)?;
                    }
                }
            }
        }
        for j in 0..nv {
            lane_mask(&mut v, j)?;
            let m = dword_ptr(cbase(j) + ZMM[idx] + (r * 4) as i32);
            v.a.vscatterdps(m.k2(), ZMM[acc(r, j)])?;
        }
    }
    v.a.vzeroupper()?;
    finish(v, table, consts)
}
