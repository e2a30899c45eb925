//! Channel shuffles read through their permutation by the copies after them.
//!
//! A copy of channels `first..first + count` of a shuffle's output (a concat input or a
//! graph output that is a slice of it: ShuffleNet's `x1` half, copied into the next
//! block's concat) becomes [`Step::Gather`], a copy that reads those channels from the
//! shuffle's *input* through the permutation (`bnc_ir::shuffle_source`). The shuffle
//! itself then computes only the channels something else still reads (`Group::channels`),
//! or nothing at all. ShuffleNet v2's stride-1 blocks copied `2C` channels in the shuffle
//! and `C` in the concat copy; they now copy `C` and `C`.
//!
//! Only copies move, so every value is computed exactly as before.

use std::collections::HashMap;

use bnc_ir::{Graph, Op, ValueId};

use super::fuse::Step;
use super::memory::resolve;
use super::ncs;

/// Rewrites the copies of `steps` that read a channel shuffle's output, and narrows or
/// drops the shuffles (see the module documentation). `alias` is the final view map;
/// `out_values` the graph outputs' storage values (pseudo values past the graph's for the
/// outputs a copy writes).
pub(super) fn gather_shuffle_copies(
    graph: &Graph,
    alias: &[Option<(ValueId, usize)>],
    out_values: &[ValueId],
    steps: &mut Vec<Step>,
) {
    // Shuffles with nothing fused into them and a buffer of their own, by output value.
    let shuffles: HashMap<ValueId, (ValueId, usize)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Group(g) if g.epi.is_empty() && g.pre.is_none() && alias[g.out.0].is_none() => {
                match graph.nodes[g.anchor].op {
                    Op::ChannelShuffle { groups } => {
                        Some((g.out, (graph.nodes[g.anchor].inputs[0], groups)))
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    if shuffles.is_empty() {
        return;
    }
    let plane = |v: ValueId| ncs(graph.shape(v)).2;
    // The shuffle's output `v` is a view of, and the channels `[lo, hi)` of it `v` holds;
    // `whole_planes` says whether `v` is exactly those channels (not a flatten, whose
    // reader counts as reading every channel).
    let channels_of = |v: ValueId| -> Option<(ValueId, usize, usize, bool)> {
        let (root, off) = resolve(alias, v);
        if !shuffles.contains_key(&root) {
            return None;
        }
        let s = plane(root);
        let whole_planes = v.0 < graph.values.len() && graph.shape(v).len() == 4 && plane(v) == s;
        Some(if whole_planes {
            (root, off / s, off / s + ncs(graph.shape(v)).1, true)
        } else {
            (root, 0, ncs(graph.shape(root)).1, false)
        })
    };
    for step in steps.iter_mut() {
        let Step::Copy { src, dst, dst_off } = *step else {
            continue;
        };
        if let Some((root, lo, hi, true)) = channels_of(src) {
            let (x, groups) = shuffles[&root];
            *step = Step::Gather {
                src,
                x,
                groups,
                first: lo,
                count: hi - lo,
                dst,
                dst_off,
            };
        }
    }
    // What each shuffle must still compute: the channels every other step and every graph
    // output reads.
    let mut needed: HashMap<ValueId, (usize, usize)> = HashMap::new();
    let mut need = |v: ValueId| {
        if let Some((root, lo, hi, _)) = channels_of(v) {
            let r = needed.entry(root).or_insert((lo, hi));
            *r = (r.0.min(lo), r.1.max(hi));
        }
    };
    for step in steps.iter() {
        match step {
            Step::Group(g) => g.reads(graph).into_iter().for_each(&mut need),
            Step::Copy { src, .. } => need(*src),
            // Its source is the input of a shuffle whose group (kept or dropped below) is
            // counted here, so a shuffle of a shuffle computes the inner one.
            Step::Gather { .. } => {}
        }
    }
    // An output no copy writes lives in its root: a shuffle's, computed whole.
    for &o in out_values.iter().filter(|o| o.0 < graph.values.len()) {
        if let Some((root, _, _, _)) = channels_of(o) {
            needed.insert(root, (0, ncs(graph.shape(root)).1));
        }
    }
    steps.retain_mut(|step| {
        let Step::Group(g) = step else {
            return true;
        };
        if !shuffles.contains_key(&g.out) {
            return true;
        }
        match needed.get(&g.out) {
            None => false,
            Some(&(lo, hi)) => {
                if (lo, hi) != (0, ncs(graph.shape(g.out)).1) {
                    g.channels = Some((lo, hi));
                }
                true
            }
        }
    });
}
