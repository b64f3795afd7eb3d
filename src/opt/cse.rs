//! Common-subexpression elimination.
//!
//! Two nodes with the same op (attributes included; constants compared bit for bit), the same
//! inputs and the same type compute the same value, so the later one is replaced by the earlier
//! (whose label it keeps). `Add` and `Mul` are commutative in IEEE f32, so `a+b` and `b+a` merge.
//! `Param` nodes reading the same parameter merge. Never merged: `Input` nodes (each is a
//! separate argument of the graph). Two `Dropout`s merge only with the same `salt`, that is the
//! same mask (the checker numbers each dropout layer: two layers on one input stay apart).
//!
//! The replaced nodes are dropped as the graph is rebuilt, so the result is densely numbered and
//! stays in topological order.

use super::rewrite::Rewriter;
use super::Pass;
use crate::ir::{BinaryOp, Graph, Op, ValueId};
use std::collections::HashMap;

/// The common-subexpression-elimination pass.
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn run(&self, g: &Graph) -> Graph {
        cse(g)
    }
}

/// `g` with duplicate computations merged.
pub fn cse(g: &Graph) -> Graph {
    let mut r = Rewriter::new(g);
    let mut seen: HashMap<String, ValueId> = HashMap::new();
    for i in 0..g.nodes.len() {
        let node = r.mapped(i);
        let key = key(&node.op, &node.inputs).map(|k| format!("{k}|{}", node.ty));
        let v = match key {
            Some(k) => match seen.get(&k) {
                Some(&v) => v,
                None => {
                    let v = r.push(node);
                    seen.insert(k, v);
                    v
                }
            },
            None => r.push(node),
        };
        r.define(v);
    }
    r.finish()
}

/// What identifies the value of a node (its type aside), or `None` for nodes never merged.
fn key(op: &Op, inputs: &[ValueId]) -> Option<String> {
    let mut inputs = inputs.to_vec();
    match op {
        Op::Input { .. } => return None,
        Op::Binary(BinaryOp::Add | BinaryOp::Mul) => inputs.sort(),
        _ => {}
    }
    // Constants by their bits: 0.0 and -0.0 differ, and NaNs are not all alike.
    let op = match op {
        Op::Const(c) => format!("const {:#x}", c.to_bits()),
        op => format!("{op:?}"),
    };
    Some(format!("{op}|{inputs:?}"))
}
