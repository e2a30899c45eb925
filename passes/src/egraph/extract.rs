//! DAG-aware extraction (design.md §3, "Extraction").
//!
//! The cost of a choice of one e-node per needed e-class is the sum of the chosen nodes' own
//! costs over the classes actually needed: a tensor read twice is paid once, a duplicated conv
//! twice. Tree costing (egg's `Extractor`) and greedy DAG costing both pay a shared conv twice,
//! so they are only used to propose defaults here. The search:
//! 1. starts from the original graph (so the result is never worse than no folding);
//! 2. for each region of interacting closure plans, tries every compatible subset of plans
//!    (branch and bound: a plan forces its compensated readers onto their compensated nodes and
//!    its target off the unfolded node), improving each by local search;
//! 3. ends with local search on the best choice: any single class switching to another node
//!    whenever the whole DAG's cost drops and the choice stays acyclic.

use std::collections::HashMap;

use egg::Id;

use super::lang::FoldNode;

/// A frozen copy of the saturated e-graph with class indices, node costs and defaults.
pub struct Frozen {
    pub ids: Vec<Id>,
    pub index: HashMap<Id, usize>,
    /// Per class: its nodes (children canonical) and their own costs.
    pub nodes: Vec<Vec<FoldNode>>,
    pub cost: Vec<Vec<f64>>,
    /// Per class and node: the class indices of its children.
    pub children: Vec<Vec<Vec<usize>>>,
    /// The cheapest node by tree cost (a default for classes the search has not fixed).
    pub tree_best: Vec<usize>,
    pub roots: Vec<usize>,
}

/// One node chosen per class (an index into `Frozen::nodes[class]`).
pub type Choice = Vec<usize>;

impl Frozen {
    pub fn new(
        ids: Vec<Id>,
        nodes: Vec<Vec<FoldNode>>,
        cost: Vec<Vec<f64>>,
        roots: &[Id],
        find: impl Fn(Id) -> Id,
    ) -> Frozen {
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let children: Vec<Vec<Vec<usize>>> = nodes
            .iter()
            .map(|class| {
                class
                    .iter()
                    .map(|n| {
                        egg::Language::children(n)
                            .iter()
                            .map(|&c| index[&find(c)])
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let roots = roots.iter().map(|&r| index[&find(r)]).collect();
        let mut frozen = Frozen {
            ids,
            index,
            nodes,
            cost,
            children,
            tree_best: Vec::new(),
            roots,
        };
        frozen.tree_best = frozen.tree_costs();
        frozen
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bottom-up tree costs to a fixpoint; the argmin per class.
    fn tree_costs(&self) -> Vec<usize> {
        self.marginal_tree_best(&vec![0; self.len()], &[])
    }

    /// Tree costs where the classes in `paid` cost nothing more (they keep their node in
    /// `choice`): the cheapest way to compute each other class given what is already
    /// computed. This is the default for classes a switch brings in, so a new class reuses
    /// tensors the graph already has instead of recomputing them.
    fn marginal_tree_best(&self, choice: &Choice, paid: &[usize]) -> Vec<usize> {
        let n = self.len();
        let mut best = vec![f64::INFINITY; n];
        let mut arg = vec![0; n];
        let mut fixed = vec![false; n];
        for &c in paid {
            best[c] = 0.0;
            arg[c] = choice[c];
            fixed[c] = true;
        }
        loop {
            let mut changed = false;
            for c in 0..n {
                if fixed[c] {
                    continue;
                }
                for (k, kids) in self.children[c].iter().enumerate() {
                    let total = self.cost[c][k] + kids.iter().map(|&k| best[k]).sum::<f64>();
                    if total < best[c] {
                        best[c] = total;
                        arg[c] = k;
                        changed = true;
                    }
                }
            }
            if !changed {
                return arg;
            }
        }
    }

    /// The classes needed under `choice`, in post-order (children first), or `None` if the
    /// choice has a cycle.
    pub fn needed(&self, choice: &Choice) -> Option<Vec<usize>> {
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut state = vec![0u8; self.len()];
        let mut order = Vec::new();
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for &root in &self.roots {
            if state[root] != 0 {
                continue;
            }
            state[root] = 1;
            stack.push((root, 0));
            while let Some(&mut (class, ref mut next)) = stack.last_mut() {
                let kids = &self.children[class][choice[class]];
                if *next < kids.len() {
                    let child = kids[*next];
                    *next += 1;
                    match state[child] {
                        0 => {
                            state[child] = 1;
                            stack.push((child, 0));
                        }
                        1 => return None,
                        _ => {}
                    }
                } else {
                    state[class] = 2;
                    order.push(class);
                    stack.pop();
                }
            }
        }
        Some(order)
    }

    /// The DAG cost of a choice: each needed class paid once. Infinite for a cyclic choice.
    pub fn dag_cost(&self, choice: &Choice) -> f64 {
        match self.needed(choice) {
            Some(classes) => classes.iter().map(|&c| self.cost[c][choice[c]]).sum(),
            None => f64::INFINITY,
        }
    }

    /// Switches single classes to other nodes while that lowers the DAG cost. Classes in
    /// `pinned` keep their node. Returns the number of switches made.
    pub fn local_search(
        &self,
        choice: &mut Choice,
        cost: &mut f64,
        pinned: &[bool],
        max_rounds: usize,
    ) -> usize {
        let mut switches = 0;
        for _ in 0..max_rounds {
            let Some(needed) = self.needed(choice) else {
                return switches;
            };
            let defaults = self.marginal_tree_best(choice, &needed);
            let mut is_needed = vec![false; self.len()];
            for &c in &needed {
                is_needed[c] = true;
            }
            for c in 0..self.len() {
                if !is_needed[c] && !pinned[c] {
                    choice[c] = defaults[c];
                }
            }
            let mut improved = false;
            for &class in &needed {
                if pinned[class] || self.nodes[class].len() < 2 {
                    continue;
                }
                let current = choice[class];
                for alt in 0..self.nodes[class].len() {
                    if alt == current {
                        continue;
                    }
                    choice[class] = alt;
                    let alt_cost = self.dag_cost(choice);
                    if alt_cost < *cost * (1.0 - 1e-12) {
                        *cost = alt_cost;
                        improved = true;
                        switches += 1;
                        break;
                    }
                    choice[class] = current;
                }
            }
            if !improved {
                break;
            }
        }
        switches
    }
}
