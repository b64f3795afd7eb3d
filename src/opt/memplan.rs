//! Memory planning: which values of a graph can share a buffer.
//!
//! An analysis rather than a [`super::Pass`]: the graph is unchanged, and the [`Plan`] tells the
//! executor where each value lives. Values are visited in node order (the execution order); a
//! value's buffer is free once the last node that reads it (directly or through a `Reshape`
//! alias) has run, and a later value takes a free buffer of its kind (per-sample or fixed size):
//! the smallest that is large enough, else the largest one, grown. A value never shares with the
//! inputs of the node that computes it, so every kernel may read its inputs while writing its
//! output. Outputs are never freed (their values are read after the run), nor are constants
//! (filled once, when buffers are allocated).
//!
//! `nnc ir --stage plan` prints the plan; `nnc check --stats` its bytes against one buffer per
//! value.

use crate::ir::print::node_to_string;
use crate::ir::{Graph, Op};
use std::fmt::Write;

/// Where one value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// The caller's memory: an input or a parameter.
    Caller,
    /// The memory of an earlier value (`Reshape`).
    Alias(usize),
    /// Buffer `k` of [`Plan::buffers`].
    Buffer(usize),
}

/// A buffer: `per` elements of 4 bytes, times the batch size when `batched`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub per: usize,
    pub batched: bool,
    /// Values that live in it over the run.
    pub values: usize,
    /// The last of them, which it still holds after the run.
    pub last: usize,
}

impl Buffer {
    pub fn bytes(&self, batch: usize) -> u64 {
        (4 * self.per as u64).saturating_mul(if self.batched { batch as u64 } else { 1 })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Per value, in node order.
    pub home: Vec<Home>,
    pub buffers: Vec<Buffer>,
}

impl Plan {
    /// Bytes of all buffers at batch size `batch`.
    pub fn bytes(&self, batch: usize) -> u64 {
        self.buffers
            .iter()
            .fold(0u64, |a, b| a.saturating_add(b.bytes(batch)))
    }

    /// Whether value `v` is still in its buffer after the run (no later value took it).
    pub fn kept(&self, v: usize) -> bool {
        match self.home[v] {
            Home::Buffer(k) => self.buffers[k].last == v,
            Home::Alias(j) => self.kept(j),
            Home::Caller => true,
        }
    }
}

/// The values that need a buffer of their own when nothing is shared (inputs, parameters and
/// aliases do not).
fn needs_buffer(op: &Op) -> bool {
    !matches!(op, Op::Input { .. } | Op::Param(_) | Op::Reshape)
}

/// One buffer per value: what the executor allocates without planning.
pub fn unplanned(g: &Graph) -> Plan {
    plan_with(g, false)
}

/// Buffers shared by liveness.
pub fn plan(g: &Graph) -> Plan {
    plan_with(g, true)
}

fn plan_with(g: &Graph, share: bool) -> Plan {
    let n = g.nodes.len();
    // The value whose memory each value uses (itself, or what a Reshape chain aliases).
    let mut root: Vec<usize> = (0..n).collect();
    let mut home = Vec::with_capacity(n);
    for (i, node) in g.nodes.iter().enumerate() {
        home.push(match node.op {
            Op::Input { .. } | Op::Param(_) => Home::Caller,
            Op::Reshape => {
                root[i] = root[node.inputs[0].index()];
                Home::Alias(root[i])
            }
            _ => Home::Buffer(usize::MAX),
        });
    }
    // Last node reading each root; `n` for what must outlive the run.
    let mut last = vec![0usize; n];
    for (i, node) in g.nodes.iter().enumerate() {
        last[i] = last[i].max(i);
        for v in &node.inputs {
            let r = root[v.index()];
            last[r] = last[r].max(i);
        }
        if matches!(node.op, Op::Const(_)) {
            last[i] = n;
        }
    }
    for o in &g.outputs {
        last[root[o.value.index()]] = n;
    }
    let mut buffers: Vec<Buffer> = Vec::new();
    // Free buffers, and the buffers whose value dies after node `i`.
    let mut free: Vec<usize> = Vec::new();
    let mut dies: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut freed = 0;
    // A second result is written by the node it reads, so it takes its buffer there, right
    // after that node's own (none freed by the node's inputs, which it may still be reading).
    let written_at = |i: usize| match g.nodes[i].op.second_result_of() {
        Some(_) => g.nodes[i].inputs[0].index(),
        None => i,
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (written_at(i), i));
    for i in order {
        let node = &g.nodes[i];
        while freed < written_at(i) {
            free.append(&mut dies[freed]);
            freed += 1;
        }
        if !needs_buffer(&node.op) {
            continue;
        }
        let per = node.ty.per_sample();
        let batched = node.ty.batched;
        let fits = |k: &usize| buffers[*k].batched == batched;
        let pick = if !share || matches!(node.op, Op::Const(_)) {
            None
        } else {
            let best_fit = free
                .iter()
                .copied()
                .filter(fits)
                .filter(|&k| buffers[k].per >= per)
                .min_by_key(|&k| buffers[k].per);
            best_fit.or_else(|| {
                free.iter()
                    .copied()
                    .filter(fits)
                    .max_by_key(|&k| buffers[k].per)
            })
        };
        let k = match pick {
            Some(k) => {
                free.retain(|&f| f != k);
                let b = &mut buffers[k];
                b.per = b.per.max(per);
                b.values += 1;
                b.last = i;
                k
            }
            None => {
                buffers.push(Buffer {
                    per,
                    batched,
                    values: 1,
                    last: i,
                });
                buffers.len() - 1
            }
        };
        home[i] = Home::Buffer(k);
        if last[i] < n {
            dies[last[i]].push(k);
        }
    }
    Plan { home, buffers }
}

/// The graph with each value's buffer, and the bytes at `batch` with and without sharing.
pub fn plan_to_string(g: &Graph, plan: &Plan, batch: usize) -> String {
    let mut s = String::new();
    let before = unplanned(g).bytes(batch);
    let _ = writeln!(
        s,
        "plan {}: {} buffers for {} values, {} bytes at batch {batch} ({} without sharing)",
        g.name,
        plan.buffers.len(),
        plan.home
            .iter()
            .filter(|h| matches!(h, Home::Buffer(_)))
            .count(),
        plan.bytes(batch),
        before
    );
    for (k, b) in plan.buffers.iter().enumerate() {
        let size = if b.batched {
            format!("B×{}", b.per)
        } else {
            b.per.to_string()
        };
        let _ = writeln!(s, "  buf{k} f32[{size}]  ({} values)", b.values);
    }
    for v in g.values() {
        let at = match plan.home[v.index()] {
            Home::Caller => "caller".to_string(),
            Home::Alias(j) => format!("alias %{j}"),
            Home::Buffer(k) => format!("buf{k}"),
        };
        let _ = writeln!(s, "  {:<8} {}", at, node_to_string(g, v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, DType, Type, UnaryOp, ValueId};

    fn batched(dims: &[usize]) -> Type {
        Type {
            dtype: DType::F32,
            dims: dims.to_vec(),
            batched: true,
        }
    }

    fn op(g: &mut Graph, op: Op, inputs: &[ValueId], ty: Type) -> ValueId {
        g.push_typed(op, inputs.to_vec(), ty, "")
    }

    /// x → relu a → neg b → relu c → ·2 d (output), and a reshape of `a` read at the end.
    fn chain() -> Graph {
        let mut g = Graph::new("chain", false);
        let x = g.input("x", batched(&[8]));
        let a = op(&mut g, Op::Unary(UnaryOp::Relu), &[x], batched(&[8]));
        let b = op(&mut g, Op::Unary(UnaryOp::Neg), &[a], batched(&[8]));
        let c = op(&mut g, Op::Unary(UnaryOp::Relu), &[b], batched(&[8]));
        let k = g.constant(2.0);
        let d = op(&mut g, Op::Binary(BinaryOp::Mul), &[c, k], batched(&[8]));
        let r = op(&mut g, Op::Reshape, &[a], batched(&[2, 4]));
        let e = op(&mut g, Op::Unary(UnaryOp::Neg), &[r], batched(&[2, 4]));
        g.set_output("output", d);
        g.set_output("other", e);
        g
    }

    #[test]
    fn dead_values_give_their_buffers_to_later_ones() {
        let g = chain();
        let p = plan(&g);
        let buf = |v: usize| match p.home[v] {
            Home::Buffer(k) => k,
            h => panic!("%{v} is {h:?}"),
        };
        assert_eq!(p.home[0], Home::Caller);
        assert_eq!(p.home[6], Home::Alias(1));
        // `a` lives until `e` reads its alias: nothing may take its buffer before.
        for v in [2, 3, 5, 7] {
            assert_ne!(buf(v), buf(1), "%{v}");
        }
        // `b` dies at `c`, and `d` takes its buffer; `c` could not (it reads `b`). The constant
        // keeps its own.
        assert_eq!(buf(5), buf(2));
        assert_ne!(buf(3), buf(2));
        assert_eq!(p.buffers[buf(4)].values, 1);
        assert!(p.kept(5) && p.kept(7) && p.kept(6) && !p.kept(2));
        assert!(p.bytes(10) < unplanned(&g).bytes(10));
        assert_eq!(unplanned(&g).buffers.len(), 6);
        assert!(unplanned(&g)
            .home
            .iter()
            .enumerate()
            .all(|(v, _)| unplanned(&g).kept(v)));
    }

    #[test]
    fn buffers_grow_to_their_largest_value_and_never_mix_batched_and_fixed() {
        let mut g = Graph::new("sizes", false);
        let x = g.input("x", batched(&[4]));
        let small = op(&mut g, Op::Unary(UnaryOp::Relu), &[x], batched(&[4]));
        let s1 = op(&mut g, Op::SumSquares, &[small], Type::scalar());
        let wide = op(&mut g, Op::Unary(UnaryOp::Neg), &[x], batched(&[16]));
        let s2 = op(&mut g, Op::SumSquares, &[wide], Type::scalar());
        let t = op(&mut g, Op::Binary(BinaryOp::Add), &[s1, s2], Type::scalar());
        g.set_output("t", t);
        let p = plan(&g);
        // `small` dies at s1, so `wide` reuses and grows its buffer.
        assert_eq!(p.home[1], p.home[3]);
        for (v, h) in p.home.iter().enumerate() {
            if let Home::Buffer(k) = *h {
                let b = p.buffers[k];
                assert_eq!(g.nodes[v].ty.batched, b.batched, "%{v}");
                assert!(g.nodes[v].ty.per_sample() <= b.per, "%{v}");
            }
        }
        assert_eq!(p.buffers.iter().filter(|b| b.batched).count(), 1);
        // The batched buffer at batch 2, and s1, s2 and t (which reads both) apart.
        assert_eq!(p.bytes(2), 4 * (16 * 2 + 3));
    }
}
