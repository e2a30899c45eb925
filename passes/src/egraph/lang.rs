//! The e-graph's language: tensors built from the canonical graph's operators, with conv and
//! dense layers carrying an exact affine prologue and epilogue (docs/design.md §3).

use bnc_ir::{Op, Shape};
use egg::{Analysis, DidMerge, EGraph, Id, Language};

use super::exact::MapId;

/// One e-node. `node` indexes the canonical graph's nodes, which hold the operator, its
/// attributes and its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FoldNode {
    /// The graph's input number `index`.
    Input { index: u32 },
    /// An operator without parameters (activation, add, pool, concat, ...) of node `node`.
    Op { node: u32, args: Box<[Id]> },
    /// Conv or dense `node` as `epi(W ∗ pad_fill(pro(x)) + b)`: its own weights, with the
    /// maps folded into it. New weights are computed only after extraction.
    Layer {
        node: u32,
        pro: MapId,
        epi: MapId,
        x: [Id; 1],
    },
    /// A per-channel affine map.
    Aff { map: MapId, x: [Id; 1] },
    /// Pad node `node` with a per-channel fill: the shifts of `fill` (whose scales are 1).
    Pad { node: u32, fill: MapId, x: [Id; 1] },
}

impl FoldNode {
    pub fn aff(map: MapId, x: Id) -> FoldNode {
        FoldNode::Aff { map, x: [x] }
    }

    /// The single input of a one-input node.
    pub fn input(&self) -> Option<Id> {
        match self {
            FoldNode::Layer { x, .. } | FoldNode::Aff { x, .. } | FoldNode::Pad { x, .. } => {
                Some(x[0])
            }
            FoldNode::Op { args, .. } if args.len() == 1 => Some(args[0]),
            _ => None,
        }
    }
}

impl Language for FoldNode {
    type Discriminant = (u8, u32, u32, u32);

    fn discriminant(&self) -> Self::Discriminant {
        match self {
            FoldNode::Input { index } => (0, *index, 0, 0),
            FoldNode::Op { node, .. } => (1, *node, 0, 0),
            FoldNode::Layer { node, pro, epi, .. } => (2, *node, pro.0, epi.0),
            FoldNode::Aff { map, .. } => (3, map.0, 0, 0),
            FoldNode::Pad { node, fill, .. } => (4, *node, fill.0, 0),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
            && self.children().len() == other.children().len()
    }

    fn children(&self) -> &[Id] {
        match self {
            FoldNode::Input { .. } => &[],
            FoldNode::Op { args, .. } => args,
            FoldNode::Layer { x, .. } | FoldNode::Aff { x, .. } | FoldNode::Pad { x, .. } => x,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            FoldNode::Input { .. } => &mut [],
            FoldNode::Op { args, .. } => args,
            FoldNode::Layer { x, .. } | FoldNode::Aff { x, .. } | FoldNode::Pad { x, .. } => x,
        }
    }
}

/// Each e-class knows its tensor shape; the operators come from the canonical graph.
#[derive(Debug)]
pub struct Shapes {
    pub ops: Vec<Op>,
    pub inputs: Vec<Shape>,
}

impl Analysis<FoldNode> for Shapes {
    type Data = Shape;

    fn make(egraph: &mut EGraph<FoldNode, Self>, enode: &FoldNode, _id: Id) -> Shape {
        let shape = |id: Id| egraph[id].data.clone();
        match enode {
            FoldNode::Input { index } => egraph.analysis.inputs[*index as usize].clone(),
            FoldNode::Op { node, args } => {
                let shapes: Vec<Shape> = args.iter().map(|&a| shape(a)).collect();
                let refs: Vec<&Shape> = shapes.iter().collect();
                egraph.analysis.ops[*node as usize]
                    .infer_shape(&refs)
                    .expect("rewrites only build well-shaped nodes")
            }
            FoldNode::Layer { node, x, .. } | FoldNode::Pad { node, x, .. } => egraph.analysis.ops
                [*node as usize]
                .infer_shape(&[&shape(x[0])])
                .expect("rewrites only build well-shaped nodes"),
            FoldNode::Aff { x, .. } => shape(x[0]),
        }
    }

    fn merge(&mut self, a: &mut Shape, b: Shape) -> DidMerge {
        debug_assert_eq!(*a, b, "merged e-classes of different shapes");
        DidMerge(false, false)
    }
}

pub type FoldEGraph = EGraph<FoldNode, Shapes>;
