//! The shared skeleton of the rewriting passes: a new graph built node by node in the old order,
//! with a map from old values to new ones, and the outputs remapped at the end; and the count of
//! each value's readers, by which the fusion passes tell a value they may absorb.

use crate::ir::{Graph, Node, Output, ValueId};

/// A graph under construction from `old`, with the old-to-new value map.
pub struct Rewriter<'a> {
    pub old: &'a Graph,
    pub new: Graph,
    map: Vec<ValueId>,
}

impl<'a> Rewriter<'a> {
    /// An empty graph with `old`'s name, mode and parameters.
    pub fn new(old: &'a Graph) -> Rewriter<'a> {
        Rewriter {
            old,
            new: Graph {
                name: old.name.clone(),
                training: old.training,
                params: old.params.clone(),
                ..Default::default()
            },
            map: Vec::with_capacity(old.nodes.len()),
        }
    }

    /// The new value of old value `v` (defined earlier).
    pub fn get(&self, v: ValueId) -> ValueId {
        self.map[v.index()]
    }

    /// A copy of old node `i` with its inputs mapped to new values.
    pub fn mapped(&self, i: usize) -> Node {
        let mut node = self.old.nodes[i].clone();
        for v in &mut node.inputs {
            *v = self.get(*v);
        }
        node
    }

    /// Appends `node` to the new graph and returns its value.
    pub fn push(&mut self, node: Node) -> ValueId {
        let id = ValueId(self.new.nodes.len() as u32);
        self.new.nodes.push(node);
        id
    }

    /// Records the new value of the next old node (old nodes are mapped in order).
    pub fn define(&mut self, v: ValueId) {
        self.map.push(v);
    }

    /// The new graph, with `old`'s outputs remapped.
    pub fn finish(mut self) -> Graph {
        self.new.outputs = self
            .old
            .outputs
            .iter()
            .map(|o| Output {
                name: o.name.clone(),
                value: self.map[o.value.index()],
            })
            .collect();
        self.new
    }
}

/// How many times each value of `g` is read, by its nodes and as an output.
pub(super) fn use_counts(g: &Graph) -> Vec<usize> {
    let mut uses = vec![0usize; g.nodes.len()];
    for node in &g.nodes {
        for v in &node.inputs {
            uses[v.index()] += 1;
        }
    }
    for o in &g.outputs {
        uses[o.value.index()] += 1;
    }
    uses
}
