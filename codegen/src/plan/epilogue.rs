//! Which part of a kernel's epilogue the assembled microkernels apply themselves (the
//! rest is Cranelift code run on the stored tile): the planner asks it to decide whether a
//! conv may be read in place, the lowering to build the kernel's [`Spec`](crate::ukernel::Spec).

use bnc_ir::Activation;

use super::{Epi, View};
use crate::ukernel::{ActOp, EpOp, Vector};

/// Where an epilogue pointer slot of an assembled kernel points.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    /// A per-channel vector in the blob (row r of the tile reads element `co + r`).
    Chan(usize),
    /// The residual tensor, at the tile's origin.
    Res(View),
}

/// The longest prefix of `epi` the assembled kernels apply themselves: affine steps, one
/// residual add, relu/relu6/clip. Returns the ops, their pointer slots, and the prefix
/// length; the rest is applied by Cranelift code on the stored tile.
pub(crate) fn fuse_prefix(
    epi: &[Epi],
    p_total: usize,
    vector: Vector,
) -> (Vec<EpOp>, Vec<Slot>, usize) {
    let mut ops = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut used = 0;
    let mut res = false;
    let slot = |slots: &mut Vec<Slot>, s: Slot| -> u8 {
        slots.push(s);
        (slots.len() - 1) as u8
    };
    for e in epi {
        match e {
            Epi::Affine { scale, shift } => match (scale, shift) {
                (Some(a), Some(b)) => {
                    let sa = slot(&mut slots, Slot::Chan(*a));
                    let sb = slot(&mut slots, Slot::Chan(*b));
                    ops.push(EpOp::ScaleShift(sa, sb));
                }
                (Some(a), None) => ops.push(EpOp::Scale(slot(&mut slots, Slot::Chan(*a)))),
                (None, Some(b)) => ops.push(EpOp::Shift(slot(&mut slots, Slot::Chan(*b)))),
                (None, None) => {}
            },
            Epi::Add(v) if !res && v.s == p_total => {
                res = true;
                ops.push(EpOp::AddRows(slot(&mut slots, Slot::Res(*v))));
            }
            Epi::Act(Activation::Relu) => ops.push(EpOp::Max(0)),
            Epi::Act(Activation::Relu6) => {
                ops.push(EpOp::Max(0));
                ops.push(EpOp::Min(6.0f32.to_bits()));
            }
            Epi::Act(Activation::Clip { min, max }) => {
                if *min > f64::NEG_INFINITY {
                    ops.push(EpOp::Max((*min as f32).to_bits()));
                }
                if *max < f64::INFINITY {
                    ops.push(EpOp::Min((*max as f32).to_bits()));
                }
            }
            Epi::Act(a) if vector.act => match a {
                Activation::Sigmoid => ops.push(EpOp::Act(ActOp::Sigmoid)),
                Activation::Silu => ops.push(EpOp::Act(ActOp::Silu)),
                Activation::Tanh => ops.push(EpOp::Act(ActOp::Tanh)),
                Activation::HardSigmoid => ops.push(EpOp::Act(ActOp::HardSigmoid)),
                Activation::HardSwish => ops.push(EpOp::Act(ActOp::HardSwish)),
                _ => break,
            },
            _ => break,
        }
        used += 1;
    }
    (ops, slots, used)
}
