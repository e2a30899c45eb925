//! DAG-aware extraction (docs/design.md §3, "Extraction").
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

    /// Bottom-up tree costs to a fixpoint; the argmin per class (the default node of a
    /// class nothing has chosen yet).
    fn tree_costs(&self) -> Vec<usize> {
        let n = self.len();
        let mut best = vec![f64::INFINITY; n];
        let mut arg = vec![0; n];
        loop {
            let mut changed = false;
            for c in 0..n {
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
        self.needed_cut(choice, None)
    }

    /// Like [`Frozen::needed`], but not looking below the classes marked in `cut`.
    fn needed_cut(&self, choice: &Choice, cut: Option<&[bool]>) -> Option<Vec<usize>> {
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
                let kids: &[usize] = if cut.is_some_and(|cut| cut[class]) {
                    &[]
                } else {
                    &self.children[class][choice[class]]
                };
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

    /// A move: the classes in `set` take the given nodes, the classes in `cut` (and in
    /// `set`) have what is below them re-chosen, and everything else stays. Re-chosen classes
    /// take their cheapest node given what the rest of the graph already computes (tensors
    /// computed anyway cost nothing more), so a fold that makes a conv unnecessary is costed
    /// without it. Classes that read a moved class are not free to read back (no cycles).
    pub fn apply_move(&self, choice: &Choice, set: &[(usize, usize)], cut: &[usize]) -> Choice {
        self.apply_move_with(choice, set, cut, false)
    }

    /// The better (by exact DAG cost) of the two ways to complete a move: re-choosing what
    /// is below the moved classes as if it cost nothing only when the rest of the graph
    /// needs it, or whenever the current choice computes it (which keeps a move near the
    /// outputs from rebuilding everything under it).
    pub fn best_move(
        &self,
        choice: &Choice,
        set: &[(usize, usize)],
        cut: &[usize],
    ) -> (Choice, f64) {
        let a = self.apply_move_with(choice, set, cut, false);
        let b = self.apply_move_with(choice, set, cut, true);
        let (ca, cb) = (self.dag_cost(&a), self.dag_cost(&b));
        if cb < ca { (b, cb) } else { (a, ca) }
    }

    fn apply_move_with(
        &self,
        choice: &Choice,
        set: &[(usize, usize)],
        cut: &[usize],
        sunk: bool,
    ) -> Choice {
        let n = self.len();
        let mut trial = choice.clone();
        let mut is_cut = vec![false; n];
        let mut pinned = vec![false; n];
        for &(c, k) in set {
            trial[c] = k;
            is_cut[c] = true;
            pinned[c] = true;
        }
        for &c in cut {
            is_cut[c] = true;
        }
        let Some(needed) = self.needed_cut(&trial, Some(&is_cut)) else {
            return trial;
        };
        let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
        for &c in &needed {
            if !is_cut[c] {
                for &k in &self.children[c][trial[c]] {
                    readers.entry(k).or_default().push(c);
                }
            }
        }
        let mut above = vec![false; n];
        let mut stack: Vec<usize> = (0..n).filter(|&c| is_cut[c]).collect();
        while let Some(c) = stack.pop() {
            for &r in readers.get(&c).into_iter().flatten() {
                if !above[r] {
                    above[r] = true;
                    stack.push(r);
                }
            }
        }
        let mut paid = vec![false; n];
        for &c in &needed {
            paid[c] = !is_cut[c] && !above[c];
        }
        if sunk && let Some(before) = self.needed(choice) {
            for c in before {
                paid[c] |= !is_cut[c] && !above[c];
            }
        }
        let mut search = Marginal {
            frozen: self,
            paid: &paid,
            pinned: &pinned,
            trial: &trial,
            memo: HashMap::new(),
            on_stack: vec![false; n],
        };
        let roots: Vec<usize> = (0..n).filter(|&c| is_cut[c]).collect();
        for &c in &roots {
            search.best(c);
        }
        let memo = search.memo;
        // Assign the re-chosen classes, top-down from the moved ones.
        let mut assigned = vec![false; n];
        let mut todo = roots;
        while let Some(c) = todo.pop() {
            if assigned[c] || paid[c] {
                continue;
            }
            assigned[c] = true;
            if !pinned[c]
                && let Some(&(_, k)) = memo.get(&c)
            {
                trial[c] = k;
            }
            todo.extend(self.children[c][trial[c]].iter().copied());
        }
        trial
    }

    /// Single switches (each with its re-chosen subtree) while the DAG cost drops. Returns
    /// the number of switches made.
    pub fn local_search(&self, choice: &mut Choice, cost: &mut f64, max_rounds: usize) -> usize {
        let mut switches = 0;
        for _ in 0..max_rounds {
            let Some(needed) = self.needed(choice) else {
                return switches;
            };
            let mut improved = false;
            for &class in &needed {
                if self.nodes[class].len() < 2 {
                    continue;
                }
                for alt in 0..self.nodes[class].len() {
                    if alt == choice[class] {
                        continue;
                    }
                    let (trial, trial_cost) = self.best_move(choice, &[(class, alt)], &[]);
                    if trial_cost < *cost * (1.0 - 1e-12) {
                        *cost = trial_cost;
                        *choice = trial;
                        improved = true;
                        switches += 1;
                        break;
                    }
                }
            }
            if !improved {
                break;
            }
        }
        switches
    }
}

/// Memoised cheapest-completion search for [`Frozen::apply_move`].
struct Marginal<'a> {
    frozen: &'a Frozen,
    paid: &'a [bool],
    pinned: &'a [bool],
    trial: &'a Choice,
    memo: HashMap<usize, (f64, usize)>,
    on_stack: Vec<bool>,
}

impl Marginal<'_> {
    /// The cheapest way to compute class `c` on top of the paid classes (tree cost of the
    /// rest), and which node achieves it; infinite on a cycle.
    fn best(&mut self, c: usize) -> f64 {
        if self.paid[c] {
            return 0.0;
        }
        if let Some(&(cost, _)) = self.memo.get(&c) {
            return cost;
        }
        if self.on_stack[c] {
            return f64::INFINITY;
        }
        self.on_stack[c] = true;
        let candidates: Vec<usize> = if self.pinned[c] {
            vec![self.trial[c]]
        } else {
            (0..self.frozen.nodes[c].len()).collect()
        };
        let mut best = (f64::INFINITY, self.trial[c]);
        for k in candidates {
            let mut total = self.frozen.cost[c][k];
            for &child in &self.frozen.children[c][k] {
                total += self.best(child);
                if total >= best.0 {
                    break;
                }
            }
            if total < best.0 {
                best = (total, k);
            }
        }
        self.on_stack[c] = false;
        // A value found while a cycle was open may be too pessimistic; it is only a guide,
        // the move is costed exactly afterwards.
        self.memo.insert(c, best);
        best.0
    }
}

/// What the plan search did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PlanSearch {
    pub plans: usize,
    pub regions: usize,
    pub largest_region: usize,
    pub subsets_evaluated: usize,
    /// Regions whose subsets were not all evaluated (the cap was hit): the result there is
    /// the best found, still exact, not proven optimal.
    pub capped_regions: usize,
    pub plans_applied: usize,
}

/// A plan in frozen indices: `(class, node)` pairs it forces, and classes (its roots'
/// outputs) that take their cheapest node given what is computed.
#[derive(Clone, Debug)]
pub struct ResolvedPlan {
    pub forced: Vec<(usize, usize)>,
    pub flexible: Vec<usize>,
}

/// Most subsets tried in one region.
const SUBSET_CAP: usize = 4096;

impl Frozen {
    /// Branch and bound over which plans to apply, region by region. `plans[i]` lists the
    /// `(class, node)` pairs plan i forces. Two plans conflict when they force one class to
    /// different nodes; plans interact (share a region) when they force a common class.
    pub fn choose_plans(
        &self,
        plans: &[ResolvedPlan],
        choice: &mut Choice,
        cost: &mut f64,
    ) -> PlanSearch {
        let mut search = PlanSearch {
            plans: plans.len(),
            ..Default::default()
        };
        // Regions: union-find over plans sharing a forced class.
        let mut parent: Vec<usize> = (0..plans.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let mut owner: HashMap<usize, usize> = HashMap::new();
        for (i, plan) in plans.iter().enumerate() {
            let classes = plan
                .forced
                .iter()
                .map(|&(c, _)| c)
                .chain(plan.flexible.iter().copied());
            for class in classes {
                if let Some(&j) = owner.get(&class) {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                } else {
                    owner.insert(class, i);
                }
            }
        }
        let mut regions: HashMap<usize, Vec<usize>> = HashMap::new();
        for i in 0..plans.len() {
            regions.entry(root(&mut parent, i)).or_default().push(i);
        }
        let mut regions: Vec<Vec<usize>> = regions.into_values().collect();
        regions.sort();
        search.regions = regions.len();

        for region in regions {
            search.largest_region = search.largest_region.max(region.len());
            let mut subsets = SubsetSearch {
                frozen: self,
                plans,
                region: &region,
                base: choice.clone(),
                chosen: Vec::new(),
                best: None,
                evaluated: 0,
                capped: false,
            };
            subsets.visit(0);
            search.subsets_evaluated += subsets.evaluated;
            search.capped_regions += usize::from(subsets.capped);
            if let Some((region_cost, trial, applied)) = subsets.best
                && region_cost < *cost
            {
                *cost = region_cost;
                *choice = trial;
                search.plans_applied += applied;
            }
        }
        search
    }
}

/// Depth-first search over the subsets of one region's plans (include or exclude each,
/// only ever including compatible plans); each leaf is one subset, costed by its move.
struct SubsetSearch<'a> {
    frozen: &'a Frozen,
    plans: &'a [ResolvedPlan],
    region: &'a [usize],
    base: Choice,
    chosen: Vec<usize>,
    /// (cost, choice, number of plans) of the cheapest subset so far.
    best: Option<(f64, Choice, usize)>,
    evaluated: usize,
    capped: bool,
}

impl SubsetSearch<'_> {
    /// Two plans conflict when they force one class to different nodes.
    fn conflict(&self, a: usize, b: usize) -> bool {
        self.plans[a].forced.iter().any(|&(c, k)| {
            self.plans[b]
                .forced
                .iter()
                .any(|&(c2, k2)| c == c2 && k != k2)
        })
    }

    fn visit(&mut self, at: usize) {
        if self.evaluated >= SUBSET_CAP {
            self.capped = true;
            return;
        }
        if at == self.region.len() {
            self.evaluated += 1;
            let plans = self.plans;
            let set: Vec<(usize, usize)> = self
                .chosen
                .iter()
                .flat_map(|&p| plans[p].forced.iter().copied())
                .collect();
            let cut: Vec<usize> = self
                .chosen
                .iter()
                .flat_map(|&p| plans[p].flexible.iter().copied())
                .collect();
            let (trial, cost) = self.frozen.best_move(&self.base, &set, &cut);
            if self.best.as_ref().is_none_or(|b| cost < b.0) {
                self.best = Some((cost, trial, self.chosen.len()));
            }
            return;
        }
        let plan = self.region[at];
        if self.chosen.iter().all(|&q| !self.conflict(plan, q)) {
            self.chosen.push(plan);
            self.visit(at + 1);
            self.chosen.pop();
        }
        self.visit(at + 1);
    }
}
