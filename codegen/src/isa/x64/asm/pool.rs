//! Max pooling rows (AVX-512), vectorised along the output row. A stride-2 window's
//! columns are every other input float: each tap loads the 32 floats its 16 outputs span
//! and picks the even ones with one `vpermt2ps`, so the input is read in place (no padded,
//! phase-split copy). Columns outside the image load as -inf (masked loads merging into
//! -inf), rows outside it are not in the kernel's `rows`.
//!
//! ```text
//! pool(w:  unused          rdi
//!      x:  *const f32      rsi  the input row of window row 0 (oy*sh - pad_top) for the
//!                               first output row; only rows in `rows` are read
//!      c:  *mut f32        rdx  the first output row
//!      k:  u64             rcx  >= 1 output rows; per row x advances `row_step`
//!                               floats and c `ow` floats
//!      ldc, ep: unused     r8, r9)
//!
//! c[ox] = max over ky in rows, kx in 0..kw (in that order, from -inf) of
//!         x[ky*w + ox*sw + kx - pl] (-inf outside 0..w)
//! ```
//!
//! `max` is the Cranelift kernel's: `v > acc || v is NaN ? v : acc`, bit for bit
//! (`vmaxps acc, v, acc` keeps `acc` on any NaN; a NaN `v` is then moved in by mask).

use super::*;

/// Output vectors per row a kernel holds in registers.
pub const MAX_VECTORS: usize = 16;

pub(super) fn assemble_pool(p: &PoolRows) -> Result<Vec<u8>, IcedError> {
    let nvec = p.ow.div_ceil(16);
    assert!((1..=MAX_VECTORS).contains(&nvec) && (1..=2).contains(&p.sw) && p.kw >= 1);
    // Registers: accumulators 0..nvec, loads 16/17, -inf 19, even-lane indices 20.
    let (ra, rb, ninf, ridx) = (ZMM[16], ZMM[17], ZMM[19], ZMM[20]);
    let mut a = CodeAssembler::new(64)?;
    let mut evens = a.create_label();
    let mut top = a.create_label();
    a.mov(eax, f32::NEG_INFINITY.to_bits())?;
    a.vpbroadcastd(ninf, eax)?;
    if p.sw == 2 {
        a.vmovdqu32(ridx, zmmword_ptr(evens))?;
    }
    let tail = p.ow - (nvec - 1) * 16;
    if tail < 16 {
        a.mov(eax, (1u32 << tail) - 1)?;
        a.kmovw(k1, eax)?;
    }
    a.set_label(&mut top)?;
    for (i, &acc) in ZMM[..nvec].iter().enumerate() {
        // The first tap goes straight into acc: from -inf, the rule takes any v (a NaN
        // for being NaN, -inf leaves -inf), so max(-inf, v) is v bit for bit.
        let taps = p
            .rows
            .iter()
            .flat_map(|&ky| (0..p.kw).map(move |kx| (ky, kx)));
        for (t, (ky, kx)) in taps.enumerate() {
            let col = (16 * i * p.sw + kx) as i64 - p.pl as i64;
            let row = (ky * p.w) as i64;
            if t == 0 {
                load_row_lanes(&mut a, acc, rb, ninf, ridx, p.sw, rsi, row, col, p.w)?;
                continue;
            }
            load_row_lanes(&mut a, ra, rb, ninf, ridx, p.sw, rsi, row, col, p.w)?;
            a.vmaxps(acc, ra, acc)?;
            a.vcmpps(k3, ra, ra, 3)?; // unordered: ra is NaN
            a.vmovaps(acc.k3(), ra)?;
        }
        if p.rows.is_empty() {
            a.vmovaps(acc, ninf)?;
        }
        let out = zmmword_ptr(rdx + (i * 64) as i32);
        if i + 1 == nvec && tail < 16 {
            a.vmovups(out.k1(), acc)?;
        } else {
            a.vmovups(out, acc)?;
        }
    }
    a.add(rsi, (p.row_step * 4) as i32)?;
    a.add(rdx, (p.ow * 4) as i32)?;
    a.dec(rcx)?;
    a.jnz(top)?;
    a.vzeroupper()?;
    a.ret()?;
    even_lanes_table(&mut a, &mut evens)?;
    a.assemble(0)
}
