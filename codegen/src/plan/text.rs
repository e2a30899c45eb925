//! The kernel plan as readable text (`bnc model.nn --emit=plan`).
//!
//! One line per decision a reader may want to check or diff: which path each kernel took
//! (GEMM, direct, tap-masked, channel-vectorised, depthwise, ...) with its tile and
//! blocking, which graph nodes it computes and what it fused, how its work is split into
//! units for the threads, and where every value lives. Offsets and sizes are in floats;
//! `#i` is the i-th kernel in run order.
//! Weight-blob offsets are left out: they change with every parameter added upstream and
//! say nothing about the choices.

use std::fmt::Write;

use bnc_ir::Activation;

use super::{ConvGeom, Epi, Kernel, KernelKind, Placement, Plan, View};
use crate::cache::CacheSizes;

/// What the plan was made for, printed in its header.
pub(crate) struct PlanTarget<'a> {
    /// The target level (`x86-64-v4`, ...).
    pub level: &'a str,
    /// The GEMM microkernel family and its tile, `rows x columns`.
    pub gemm: (&'a str, usize, usize),
    pub caches: CacheSizes,
}

pub(crate) fn plan_text(plan: &Plan, target: &PlanTarget) -> String {
    let mut s = String::new();
    let (family, mr, nr) = target.gemm;
    let threads = plan.threads;
    let _ = writeln!(
        s,
        "plan target {} gemm {family} {mr}x{nr} threads {threads} l1d {} KiB l2 {} KiB",
        target.level,
        target.caches.l1d / 1024,
        target.caches.l2 / 1024,
    );
    for (i, (name, shape)) in plan.inputs.iter().enumerate() {
        let _ = writeln!(s, "input  in{i} %{name} {shape:?}");
    }
    for (j, (name, shape)) in plan.outputs.iter().enumerate() {
        let _ = writeln!(s, "output out{j} %{name} {shape:?}");
    }
    let _ = writeln!(
        s,
        "workspace {} = buffers {} + scratch {} x {threads}",
        plan.workspace_floats(),
        plan.buffers,
        plan.scratch,
    );
    let _ = writeln!(s, "\nbuffers");
    for p in &plan.layout {
        match p {
            Placement::Buffer {
                value,
                offset,
                floats,
                live,
            } => {
                let _ = writeln!(
                    s,
                    "  %{value} ws[{offset}..{}] live #{}..#{}",
                    offset + floats,
                    live.0,
                    live.1
                );
            }
            Placement::View { value, of, offset } => {
                let _ = writeln!(s, "  %{value} view of %{of} at {offset}");
            }
            Placement::Caller { value, storage } => {
                let _ = writeln!(s, "  %{value} {}", storage_name(plan, *storage));
            }
        }
    }
    let _ = writeln!(s, "\nkernels");
    for (i, k) in plan.kernels.iter().enumerate() {
        kernel_text(&mut s, plan, i, k);
    }
    s
}

fn kernel_text(s: &mut String, plan: &Plan, index: usize, k: &Kernel) {
    let sources: Vec<String> = k.sources.iter().map(|v| format!("%{v}")).collect();
    let _ = writeln!(s, "  #{index} {} <- {}", k.name, sources.join(", "));
    let _ = writeln!(s, "    {}", path_text(&k.kind));
    let _ = writeln!(
        s,
        "    in {} out {}",
        view_text(plan, k.kind.input()),
        view_text(plan, k.out)
    );
    let mut last = format!("    units {}", k.units);
    if k.scratch > 0 {
        let _ = write!(last, " scratch {}", k.scratch);
    }
    if !k.epi.is_empty() {
        let epi: Vec<String> = k.epi.iter().map(|e| epi_text(plan, e)).collect();
        let _ = write!(last, " epilogue {}", epi.join(", "));
    }
    let _ = writeln!(s, "{last}");
}

/// The path a kernel takes and its tiling.
fn path_text(kind: &KernelKind) -> String {
    match kind {
        KernelKind::Gemm {
            g,
            nb,
            mchunks,
            wide,
            kc,
            ..
        } => {
            let family = match wide {
                Some(isa) => isa.name(),
                None => "f32x4",
            };
            format!(
                "gemm {family} conv {} kc {kc} nb {nb} mchunks {mchunks}",
                geom_text(g)
            )
        }
        KernelKind::DirectConv {
            g,
            kc,
            pitch,
            plane,
            taps,
            nb,
            mchunks,
            m_major,
            tap_masks,
            chanvec,
            ..
        } => {
            let geom = geom_text(g);
            let taps = taps.len();
            if let Some(pixels) = chanvec {
                return format!(
                    "direct channel-vectorised conv {geom} tile {pixels} pixels kc {kc} taps {taps}"
                );
            }
            let path = match tap_masks {
                Some(m) => match m.by_column {
                    Some(kw) => format!("direct tap-masked (by column, kw {kw})"),
                    None => "direct tap-masked".to_string(),
                },
                None => "direct".to_string(),
            };
            let order = if *m_major { " m-major" } else { "" };
            format!(
                "{path} conv {geom} kc {kc} nb {nb} mchunks {mchunks}{order} pitch {pitch} plane {plane} taps {taps}"
            )
        }
        KernelKind::PadPlanes {
            hw,
            pads,
            stride,
            phases,
            hqwq,
            fill,
            ..
        } => format!(
            "pad-planes {}x{} pads {}x{} stride {}x{} phases {} of {}x{}{}",
            hw[0],
            hw[1],
            pads[0],
            pads[1],
            stride[0],
            stride[1],
            phases.len(),
            hqwq[0],
            hqwq[1],
            if fill.is_some() { " fill" } else { "" }
        ),
        KernelKind::Depthwise { g, .. } => format!("depthwise conv {}", geom_text(g)),
        KernelKind::Dense { k, m, .. } => format!("dense {k} -> {m}"),
        KernelKind::MaxPool {
            p,
            hw,
            ohw,
            in_place,
            ..
        } => format!(
            "maxpool{} {}x{} stride {}x{} {}x{} -> {}x{}",
            if in_place.is_some() { " in-place" } else { "" },
            p.kernel[0],
            p.kernel[1],
            p.stride[0],
            p.stride[1],
            hw[0],
            hw[1],
            ohw[0],
            ohw[1]
        ),
        KernelKind::AvgPool { p, hw, ohw, .. } => format!(
            "avgpool {}x{} stride {}x{} {}x{} -> {}x{}",
            p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], hw[0], hw[1], ohw[0], ohw[1]
        ),
        KernelKind::GlobalAvgPool { .. } => "global-avgpool".to_string(),
        KernelKind::GlobalMaxPool { .. } => "global-maxpool".to_string(),
        KernelKind::Elementwise { .. } => "elementwise".to_string(),
        KernelKind::Softmax { .. } => "softmax".to_string(),
        KernelKind::LayerNorm { eps, .. } => format!("layer-norm over channels eps {eps:e}"),
        KernelKind::Resize {
            bilinear,
            hw,
            ohw,
            coordinates,
            ..
        } => format!(
            "resize {} {}x{} -> {}x{} {coordinates}",
            if *bilinear { "bilinear" } else { "nearest" },
            hw[0],
            hw[1],
            ohw[0],
            ohw[1]
        ),
        KernelKind::ChannelShuffle { groups, first, .. } => match first {
            0 => format!("channel-shuffle groups {groups}"),
            _ => format!("channel-shuffle groups {groups} from channel {first}"),
        },
        KernelKind::ConvTranspose {
            hw,
            ohw,
            cin_g,
            cout_g,
            kernel,
            stride,
            ..
        } => format!(
            "conv-transpose phase-split {}x{} stride {}x{} {}x{} -> {}x{} {cin_g}->{cout_g} per group",
            kernel[0], kernel[1], stride[0], stride[1], hw[0], hw[1], ohw[0], ohw[1]
        ),
        KernelKind::Col2Im {
            hw,
            ohw,
            kernel,
            stride,
            taps,
            ..
        } => format!(
            "conv-transpose col2im{} {}x{} stride {}x{} {}x{} -> {}x{}",
            if super::col2im_is_copy(taps) {
                " depth-to-space"
            } else {
                ""
            },
            kernel[0],
            kernel[1],
            stride[0],
            stride[1],
            hw[0],
            hw[1],
            ohw[0],
            ohw[1]
        ),
        KernelKind::Pad {
            pads, value, fill, ..
        } => match fill {
            Some(_) => format!("pad {pads:?} fill"),
            None => format!("pad {pads:?} value {value}"),
        },
    }
}

fn geom_text(g: &ConvGeom) -> String {
    let mut s = format!(
        "{}x{} {}->{} {}x{}",
        g.kernel[0], g.kernel[1], g.cin, g.cout, g.h, g.w
    );
    if g.stride != [1, 1] {
        let _ = write!(s, " stride {}x{}", g.stride[0], g.stride[1]);
    }
    if g.dilation != [1, 1] {
        let _ = write!(s, " dilation {}x{}", g.dilation[0], g.dilation[1]);
    }
    if g.pad != [0; 4] {
        let _ = write!(s, " pad {:?}", g.pad);
    }
    if g.groups > 1 {
        let _ = write!(s, " groups {}", g.groups);
    }
    if g.fill.is_some() {
        let _ = write!(s, " fill");
    }
    if g.chan.is_some() {
        let _ = write!(s, " through-shuffle");
    }
    s
}

fn epi_text(plan: &Plan, e: &Epi) -> String {
    match e {
        Epi::Affine { scale, shift } => match (scale, shift) {
            (Some(_), Some(_)) => "affine".to_string(),
            (Some(_), None) => "scale".to_string(),
            (None, Some(_)) => "shift".to_string(),
            (None, None) => "identity".to_string(),
        },
        Epi::Add(v) => format!("add {}", view_text(plan, *v)),
        Epi::Mul(v) => format!("mul {}", view_text(plan, *v)),
        Epi::MulChan(v) => format!("mul-channel {}", view_text(plan, *v)),
        Epi::Act(a) => activation_text(a),
    }
}

fn activation_text(a: &Activation) -> String {
    match a {
        Activation::LeakyRelu { alpha } => format!("leaky_relu {alpha}"),
        Activation::Clip { min, max } => format!("clip {min}..{max}"),
        _ => a.name().to_string(),
    }
}

fn storage_name(plan: &Plan, storage: usize) -> String {
    let ni = plan.inputs.len();
    match storage {
        0 => "ws".to_string(),
        s if s <= ni => format!("in{}", s - 1),
        s => format!("out{}", s - 1 - ni),
    }
}

/// `storage+offset NxCxS`, with the batch stride when the view is a slice of a larger
/// tensor.
fn view_text(plan: &Plan, v: View) -> String {
    let mut s = format!(
        "{}+{} {}x{}x{}",
        storage_name(plan, v.storage),
        v.offset,
        v.n,
        v.c,
        v.s
    );
    if v.bstride != v.c * v.s {
        let _ = write!(s, " batch-stride {}", v.bstride);
    }
    s
}
