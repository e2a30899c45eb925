//! Editing helpers for passes: rewiring uses, dropping dead nodes and parameters, naming new
//! values and parameter sets without collisions.

use std::collections::{BTreeSet, HashSet};

use crate::{Graph, Shape, Tensor, Value, ValueId};

impl Graph {
    /// Makes every reader of `old` (nodes and graph outputs) read `new` instead.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        for node in &mut self.nodes {
            for input in &mut node.inputs {
                if *input == old {
                    *input = new;
                }
            }
        }
        for output in &mut self.outputs {
            if *output == old {
                *output = new;
            }
        }
    }

    /// A value name based on `base` that no value has yet.
    pub fn fresh_value_name(&self, base: &str) -> String {
        let taken: HashSet<&str> = self.values.iter().map(|v| v.name.as_str()).collect();
        fresh(base, |n| taken.contains(n))
    }

    /// A parameter prefix based on `base` under which no parameter exists yet.
    pub fn fresh_param_prefix(&self, base: &str) -> String {
        // Parameters are sorted by name: one range query per candidate, not a scan.
        let taken = |prefix: &str| {
            let dotted = format!("{prefix}.");
            self.params
                .range(dotted.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&dotted))
        };
        fresh(base, taken)
    }

    /// Adds a value (not yet produced by any node) and returns its id.
    pub fn add_value(&mut self, name: String, shape: Shape) -> ValueId {
        self.values.push(Value { name, shape });
        ValueId(self.values.len() - 1)
    }

    /// Stores `tensors` under a fresh prefix based on `base` and returns the prefix.
    pub fn add_params(&mut self, base: &str, tensors: Vec<(&str, Tensor)>) -> String {
        let prefix = self.fresh_param_prefix(base);
        for (suffix, tensor) in tensors {
            self.params.insert(format!("{prefix}.{suffix}"), tensor);
        }
        prefix
    }

    /// Removes nodes whose results nobody reads, then values and parameters nothing refers
    /// to, renumbering values. Graph inputs are kept even when unused.
    pub fn remove_dead(&mut self) {
        let mut live: HashSet<ValueId> = self.outputs.iter().copied().collect();
        let mut keep = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if live.contains(&node.output) {
                keep[i] = true;
                live.extend(node.inputs.iter().copied());
            }
        }
        let mut index = 0;
        self.nodes.retain(|_| {
            index += 1;
            keep[index - 1]
        });

        let mut used: BTreeSet<ValueId> = self.inputs.iter().copied().collect();
        used.extend(self.outputs.iter().copied());
        for node in &self.nodes {
            used.insert(node.output);
            used.extend(node.inputs.iter().copied());
        }
        let mut renumber = vec![None; self.values.len()];
        let mut values = Vec::with_capacity(used.len());
        for id in used {
            renumber[id.0] = Some(ValueId(values.len()));
            values.push(self.values[id.0].clone());
        }
        let map = |id: &mut ValueId| *id = renumber[id.0].expect("used value was kept");
        self.inputs.iter_mut().for_each(map);
        self.outputs.iter_mut().for_each(map);
        for node in &mut self.nodes {
            map(&mut node.output);
            node.inputs.iter_mut().for_each(map);
        }
        self.values = values;

        // Keep exactly the tensors some node's operator reads.
        let mut needed: HashSet<String> = HashSet::new();
        for node in &self.nodes {
            if let Some(prefix) = &node.params {
                let shapes: Vec<&Shape> = node.inputs.iter().map(|&i| self.shape(i)).collect();
                for spec in node.op.param_specs(&shapes) {
                    needed.insert(format!("{prefix}.{}", spec.suffix));
                }
            }
        }
        self.params.retain(|name, _| needed.contains(name));
    }

    /// Whether readers of `old` can be moved to `new` by [`Graph::forward_value`] without
    /// renaming a graph input or merging two graph outputs.
    pub fn can_forward(&self, old: ValueId, new: ValueId) -> bool {
        !self.outputs.contains(&old) || !(self.inputs.contains(&new) || self.outputs.contains(&new))
    }

    /// Moves every reader of `old` to `new`. When `old` is a graph output, `new` takes its
    /// name, so the model's interface keeps its names. Check [`Graph::can_forward`] first.
    pub fn forward_value(&mut self, old: ValueId, new: ValueId) {
        debug_assert!(self.can_forward(old, new));
        if self.outputs.contains(&old) {
            let name = std::mem::take(&mut self.values[old.0].name);
            self.values[old.0].name = format!("{name}.dead");
            self.values[new.0].name = name;
        }
        self.replace_uses(old, new);
    }
}

fn fresh(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| !taken(n))
        .expect("some suffix is free")
}
