//! The padded, stride-phase copy a strided or size-changing conv reads (AVX-512; see
//! `KernelKind::PadPlanes`): of one channel, phase `(py, px)` is the `hq x wq` plane with
//! `out[y][x] = padded[y * sh + py][x * sw + px]`. A stride-2 row takes the even floats of
//! the 32 its 16 outputs span with one `vpermt2ps` (as in `pool.rs`); the padding is the
//! fill value (zero, or the channel's folded BN fill), by masked loads merging into it.
//!
//! ```text
//! pad(w:  *const f32   rdi  the channel's fill value
//!     x:  *const f32   rsi  the channel's input plane (h x w)
//!     c:  *mut f32     rdx  its phase planes, one after another
//!     k, ldc, ep: unused rcx, r8, r9)
//! ```

use super::*;

/// Vectors per phase row a kernel unrolls (`wq` up to 512 floats).
pub const MAX_VECTORS: usize = 32;

pub(super) fn assemble_pad(p: &PadRows) -> Result<Vec<u8>, IcedError> {
    let [h, w] = [p.h, p.w];
    let [pt, pl] = p.pads;
    let [sh, sw] = p.stride;
    let [hq, wq] = p.hqwq;
    let nvec = wq.div_ceil(16);
    assert!((1..=MAX_VECTORS).contains(&nvec) && (1..=2).contains(&sw) && sh >= 1);
    let (ra, rb, fill, ridx) = (ZMM[16], ZMM[17], ZMM[19], ZMM[20]);
    let plane = hq * wq;
    let mut a = CodeAssembler::new(64)?;
    let mut evens = a.create_label();
    if sw == 2 {
        a.vmovdqu32(ridx, zmmword_ptr(evens))?;
    }
    let tail = wq - (nvec - 1) * 16;
    if tail < 16 {
        a.mov(eax, (1u32 << tail) - 1)?;
        a.kmovw(k1, eax)?;
    }
    // Stores vector `i` of the row at r11 from `r`.
    let store = |a: &mut CodeAssembler, i: usize, r: AsmRegisterZmm| {
        let m = zmmword_ptr(r11 + (i * 64) as i32);
        if i + 1 == nvec && tail < 16 {
            a.vmovups(m.k1(), r)
        } else {
            a.vmovups(m, r)
        }
    };
    a.vbroadcastss(fill, dword_ptr(rdi))?;
    for (pi, &[py, px]) in p.phases.iter().enumerate() {
        // Phase rows y whose input row y*sh + py - pt is inside 0..h.
        let inside = |y: usize| (pt..pt + h).contains(&(y * sh + py));
        let ylo = (0..hq).find(|&y| inside(y)).unwrap_or(hq);
        let yhi = (ylo..hq).find(|&y| !inside(y)).unwrap_or(hq);
        a.lea(r11, ptr(rdx + (pi * plane * 4) as i32))?;
        let fill_rows = |a: &mut CodeAssembler, n: usize| -> Result<(), IcedError> {
            for _ in 0..n {
                for i in 0..nvec {
                    store(a, i, fill)?;
                }
                a.add(r11, (wq * 4) as i32)?;
            }
            Ok(())
        };
        fill_rows(&mut a, ylo)?;
        if ylo < yhi {
            let mut row = a.create_label();
            let first = (ylo * sh + py - pt) as i64;
            a.lea(r10, ptr(rsi + (first * w as i64 * 4) as i32))?;
            a.mov(eax, (yhi - ylo) as u32)?;
            a.mov(r8, rax)?;
            a.set_label(&mut row)?;
            for i in 0..nvec {
                let col = (16 * i * sw + px) as i64 - pl as i64;
                load_row_lanes(&mut a, ra, rb, fill, ridx, sw, r10, 0, col, w)?;
                store(&mut a, i, ra)?;
            }
            a.add(r10, (sh * w * 4) as i32)?;
            a.add(r11, (wq * 4) as i32)?;
            a.dec(r8)?;
            a.jnz(row)?;
        }
        fill_rows(&mut a, hq - yhi)?;
    }
    a.vzeroupper()?;
    a.ret()?;
    even_lanes_table(&mut a, &mut evens)?;
    a.assemble(0)
}
