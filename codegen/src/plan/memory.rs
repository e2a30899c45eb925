//! Memory planning: where every value lives. Flatten/identity/dropout outputs and concat
//! inputs become views of another value (written in place); graph inputs and outputs live
//! in the caller's buffers; every other value gets a workspace buffer, shared with values
//! whose lifetimes (in steps of the schedule) do not overlap, placed largest first.

use std::collections::HashSet;

use bnc_ir::{Graph, Op, Shape, ValueId};

use super::fuse::{EpiDesc, Group, Step, is_alias};
use super::gather::gather_shuffle_copies;
use super::{Placement, View, align, ncs, numel};
use crate::error::CodegenError;

/// Where the values of a plan live (see the module documentation).
pub(super) struct Layout<'g> {
    graph: &'g Graph,
    /// Each value's `(value it is a view of, element offset in it)`.
    alias: Vec<Option<(ValueId, usize)>>,
    /// Storage slot of each root: 0 the workspace, then the inputs, then the outputs.
    root_storage: Vec<Option<usize>>,
    ws_offset: Vec<usize>,
    /// Pseudo values past the graph's: the buffers of outputs written by a copy.
    extra_values: Vec<(ValueId, Shape)>,
    out_values: Vec<ValueId>,
    /// First and last step using each root.
    interval: Vec<Option<(usize, usize)>>,
    /// Floats of the workspace buffers.
    pub buffers: usize,
}

/// The root `v` is a view of, and its offset there.
pub(super) fn resolve(alias: &[Option<(ValueId, usize)>], v: ValueId) -> (ValueId, usize) {
    let (mut cur, mut off) = (v, 0);
    let mut guard = 0;
    while let Some((next, o)) = alias[cur.0] {
        cur = next;
        off += o;
        guard += 1;
        if guard > alias.len() {
            break;
        }
    }
    (cur, off)
}

fn value_shape(graph: &Graph, extra_values: &[(ValueId, Shape)], v: ValueId) -> Shape {
    let nv = graph.values.len();
    if v.0 < nv {
        graph.shape(v).clone()
    } else {
        extra_values[v.0 - nv].1.clone()
    }
}

impl Layout<'_> {
    /// The `c` channels of `dst` from element offset `off` (a copy's destination: a concat
    /// slice or an output).
    pub fn region(&self, dst: ValueId, off: usize, c: usize) -> View {
        let v = self.view(dst);
        View {
            offset: v.offset + off,
            c,
            ..v
        }
    }

    /// How a kernel addresses `v`.
    pub fn view(&self, v: ValueId) -> View {
        let (r, off) = resolve(&self.alias, v);
        let rs = value_shape(self.graph, &self.extra_values, r);
        let (rn, _, _) = ncs(&rs);
        let (n, c, s) = ncs(&value_shape(self.graph, &self.extra_values, v));
        let storage = self.root_storage[r.0].unwrap_or(0);
        let base = if storage == 0 { self.ws_offset[r.0] } else { 0 };
        View {
            storage,
            offset: base + off,
            bstride: numel(&rs) / rn.max(1),
            n,
            c,
            s,
        }
    }

    /// The name of `v` in plans (an output's own buffer is `NAME (copy)`).
    pub fn value_name(&self, v: ValueId) -> String {
        let nv = self.graph.values.len();
        if v.0 < nv {
            self.graph.value(v).name.clone()
        } else {
            let j = self.out_values.iter().position(|&o| o == v).unwrap_or(0);
            format!("{} (copy)", self.graph.value(self.graph.outputs[j]).name)
        }
    }

    /// Where every value lives, given the kernels that run each step (`first..=last`).
    pub fn placements(&self, step_kernels: &[(usize, usize)]) -> Vec<Placement> {
        let mut layout = Vec::new();
        for v in 0..self.alias.len() {
            let value = self.value_name(ValueId(v));
            if let Some((of, offset)) = self.alias[v] {
                layout.push(Placement::View {
                    value,
                    of: self.value_name(of),
                    offset,
                });
            } else if let Some(iv) = self.interval[v] {
                layout.push(match self.root_storage[v] {
                    Some(0) | None => Placement::Buffer {
                        value,
                        offset: self.ws_offset[v],
                        floats: align(numel(&value_shape(
                            self.graph,
                            &self.extra_values,
                            ValueId(v),
                        ))),
                        live: (step_kernels[iv.0].0, step_kernels[iv.1].1),
                    },
                    Some(storage) => Placement::Caller { value, storage },
                });
            }
        }
        layout
    }
}

/// Orders the fused `groups` and the copies concat and outputs need into steps, and places
/// every value.
pub(super) fn place(
    graph: &Graph,
    groups: Vec<Group>,
) -> Result<(Vec<Step>, Layout<'_>), CodegenError> {
    let nv = graph.values.len();
    let shape = |v: ValueId| graph.shape(v);
    let mut is_output = vec![false; nv];
    for o in &graph.outputs {
        is_output[o.0] = true;
    }
    let mut alias: Vec<Option<(ValueId, usize)>> = vec![None; nv];
    let mut materialized = vec![false; nv]; // written by a kernel or a concat
    for g in &groups {
        materialized[g.out.0] = true;
    }
    for n in &graph.nodes {
        if is_alias(&n.op) {
            // A channel slice starts `start` planes into its input; other views at 0.
            let offset = match n.op {
                Op::SliceChannels { start, .. } => start * ncs(shape(n.inputs[0])).2,
                _ => 0,
            };
            alias[n.output.0] = Some((n.inputs[0], offset));
        }
        if matches!(n.op, Op::Concat) {
            materialized[n.output.0] = true;
        }
    }
    let mut steps: Vec<(usize, Step)> = Vec::new();
    for (ci, node) in graph.nodes.iter().enumerate().rev() {
        if !matches!(node.op, Op::Concat) {
            continue;
        }
        let out = node.output;
        let (_, _, s) = ncs(shape(out));
        // Every input already placed contiguously, in order: the concat is a view of them.
        if alias[out.0].is_none() && !is_output[out.0] {
            let first = resolve(&alias, node.inputs[0]);
            let mut expect = first.1;
            let mut ok = true;
            for &x in &node.inputs {
                let (r, o) = resolve(&alias, x);
                if alias[x.0].is_none() || r != first.0 || o != expect || r == x {
                    ok = false;
                    break;
                }
                expect += ncs(shape(x)).1 * s;
            }
            if ok {
                alias[out.0] = Some((node.inputs[0], 0));
                continue;
            }
        }
        let mut seen = HashSet::new();
        let mut coff = 0;
        for &x in &node.inputs {
            let eligible = alias[x.0].is_none()
                && materialized[x.0]
                && !is_output[x.0]
                && x != out
                && seen.insert(x);
            if eligible {
                alias[x.0] = Some((out, coff * s));
            } else {
                steps.push((
                    ci,
                    Step::Copy {
                        src: x,
                        dst: out,
                        dst_off: coff * s,
                    },
                ));
            }
            coff += ncs(shape(x)).1;
        }
    }
    // Cycle guard: every alias chain must end.
    for v in 0..nv {
        let mut cur = ValueId(v);
        let mut guard = 0;
        while let Some((next, _)) = alias[cur.0] {
            cur = next;
            guard += 1;
            if guard > nv {
                return Err(CodegenError::Invalid(
                    "alias cycle in buffer placement".into(),
                ));
            }
        }
    }
    for g in groups {
        steps.push((g.last, Step::Group(g)));
    }
    steps.sort_by_key(|(pos, _)| *pos);
    let mut steps: Vec<Step> = steps.into_iter().map(|(_, s)| s).collect();

    // Storage of roots: graph inputs, graph outputs, or the workspace.
    let ni = graph.inputs.len();
    let mut root_storage: Vec<Option<usize>> = vec![None; nv];
    for (i, v) in graph.inputs.iter().enumerate() {
        root_storage[v.0] = Some(1 + i);
    }
    for (j, v) in graph.outputs.iter().enumerate() {
        if alias[v.0].is_none() && root_storage[v.0].is_none() {
            root_storage[v.0] = Some(1 + ni + j);
        }
    }
    // Outputs not written in place get a copy at the end, into a fresh output root.
    let mut out_values: Vec<ValueId> = Vec::new();
    let mut extra_values: Vec<(ValueId, Shape)> = Vec::new();
    for (j, &v) in graph.outputs.iter().enumerate() {
        let (root, off) = resolve(&alias, v);
        if root == v && off == 0 && root_storage[v.0] == Some(1 + ni + j) {
            out_values.push(v);
        } else if root != v
            && off == 0
            && root_storage[root.0].is_none()
            && numel(shape(root)) == numel(shape(v))
        {
            // An output that views a whole workspace root (identity, flatten): the root
            // lives in the output buffer instead, no copy.
            root_storage[root.0] = Some(1 + ni + j);
            out_values.push(v);
        } else {
            // A pseudo value id beyond the graph's values stands for output j's own buffer.
            let pseudo = ValueId(nv + extra_values.len());
            extra_values.push((pseudo, shape(v).clone()));
            steps.push(Step::Copy {
                src: v,
                dst: pseudo,
                dst_off: 0,
            });
            out_values.push(pseudo);
            let _ = j;
        }
    }
    let total_values = nv + extra_values.len();
    let shape_of = |v: ValueId| value_shape(graph, &extra_values, v);
    root_storage.resize(total_values, None);
    for (j, &v) in out_values.iter().enumerate() {
        if v.0 >= nv {
            root_storage[v.0] = Some(1 + ni + j);
        }
    }
    alias.resize(total_values, None);
    gather_shuffle_copies(graph, &alias, &out_values, &mut steps);

    // ---- Liveness and workspace layout -------------------------------------------------
    let step_values = |s: &Step| -> Vec<ValueId> {
        match s {
            Step::Group(g) => {
                let mut v = Vec::new();
                if g.load.is_none() {
                    v.extend(g.inputs(graph).iter().copied());
                } else {
                    v.extend(g.load);
                }
                for e in &g.epi {
                    match e {
                        EpiDesc::Add(o) | EpiDesc::Mul(o) | EpiDesc::MulChan(o) => v.push(*o),
                        _ => {}
                    }
                }
                v.push(g.out);
                v
            }
            Step::Copy { src, dst, .. } => vec![*src, *dst],
            Step::Gather { x, dst, .. } => vec![*x, *dst],
        }
    };
    let mut interval: Vec<Option<(usize, usize)>> = vec![None; total_values];
    for (si, s) in steps.iter().enumerate() {
        for v in step_values(s) {
            let (r, _) = resolve(&alias, v);
            let iv = interval[r.0].get_or_insert((si, si));
            iv.0 = iv.0.min(si);
            iv.1 = iv.1.max(si);
        }
    }
    let mut ws_roots: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (root, floats, interval)
    for (r, iv) in interval.iter().enumerate() {
        if let Some(iv) = iv
            && root_storage[r].is_none()
            && alias[r].is_none()
        {
            ws_roots.push((r, align(numel(&shape_of(ValueId(r)))), *iv));
        }
    }
    ws_roots.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (offset, size, iv)
    let mut ws_offset = vec![0usize; total_values];
    let mut buffers = 0;
    for (r, size, iv) in ws_roots {
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, piv)| piv.0 <= iv.1 && iv.0 <= piv.1)
            .map(|(o, s, _)| (*o, *s))
            .collect();
        conflicts.sort();
        let mut off = 0;
        for (o, s) in conflicts {
            if off + size <= o {
                break;
            }
            off = off.max(o + s);
        }
        placed.push((off, size, iv));
        ws_offset[r] = off;
        buffers = buffers.max(off + size);
        root_storage[r] = Some(0);
    }
    Ok((
        steps,
        Layout {
            graph,
            alias,
            root_storage,
            ws_offset,
            extra_values,
            out_values,
            interval,
            buffers,
        },
    ))
}
