//! Constant folding and bit-exact algebraic identities.
//!
//! - A `Unary` or `Binary` node whose inputs are all `Const` becomes a `Const`, computed in f32
//!   (the precision of the JIT; transcendental functions may differ from the JIT's own by an ulp).
//! - Identities that return their operand unchanged, bit for bit, for every f32 including −0.0,
//!   infinities and NaN: `x·1`, `1·x`, `x/1`, `x + (−0.0)`, `(−0.0) + x`, `x − (+0.0)` and
//!   `−(−x)` are replaced by `x`. (`x + 0.0` is not: it turns −0.0 into +0.0; nor is `x·0`.)
//!   A node is replaced only by a value of its own type, so a broadcast is never dropped.
//!
//! The nodes left unused are removed by [`super::dce`].

use super::rewrite::Rewriter;
use super::Pass;
use crate::ir::{BinaryOp, Graph, Node, Op, Type, UnaryOp, ValueId};

/// The constant-folding pass.
pub struct ConstFold;

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const_fold"
    }
    fn run(&self, g: &Graph) -> Graph {
        const_fold(g)
    }
}

/// `g` with constant expressions folded and identities applied.
pub fn const_fold(g: &Graph) -> Graph {
    let mut r = Rewriter::new(g);
    for i in 0..g.nodes.len() {
        let node = r.mapped(i);
        // Identities first: they reuse an existing value rather than add a constant.
        let v = if let Some(x) = identity(&r.new, &node) {
            x
        } else if let Some(c) = fold(&r.new, &node) {
            r.push(Node {
                op: Op::Const(c),
                inputs: vec![],
                ty: Type::scalar(),
                label: node.label,
            })
        } else {
            r.push(node)
        };
        r.define(v);
    }
    r.finish()
}

/// The constant value of `v`, if it is a scalar `Const` (a folded node is a scalar: a
/// constant tensor is left to the op that reads it).
fn constant(g: &Graph, v: ValueId) -> Option<f32> {
    match g.node(v).op {
        Op::Const(c) if g.ty(v).is_scalar() => Some(c),
        _ => None,
    }
}

/// The value of an elementwise node over constants (inputs already in `g`).
fn fold(g: &Graph, node: &Node) -> Option<f32> {
    if node.ty != Type::scalar() {
        return None;
    }
    match (&node.op, node.inputs.as_slice()) {
        (Op::Unary(u), [x]) => Some(unary(*u, constant(g, *x)?)),
        (Op::Binary(b), [x, y]) => Some(binary(*b, constant(g, *x)?, constant(g, *y)?)),
        _ => None,
    }
}

/// `op(x)` in f32.
pub fn unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        // The activations added later: the interpreter's f64 formula, rounded.
        _ => crate::interp::unary_fn(op, f64::from(x)) as f32,
    }
}

/// `x op y` in f32.
pub fn binary(op: BinaryOp, x: f32, y: f32) -> f32 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
    }
}

/// The operand an identity reduces `node` to, if one applies and has the node's type.
fn identity(g: &Graph, node: &Node) -> Option<ValueId> {
    let is = |v: ValueId, c: f32| constant(g, v).is_some_and(|k| k.to_bits() == c.to_bits());
    let x = match (&node.op, node.inputs.as_slice()) {
        (Op::Binary(BinaryOp::Mul), &[a, b]) if is(b, 1.0) => a,
        (Op::Binary(BinaryOp::Mul), &[a, b]) if is(a, 1.0) => b,
        (Op::Binary(BinaryOp::Div), &[a, b]) if is(b, 1.0) => a,
        (Op::Binary(BinaryOp::Add), &[a, b]) if is(b, -0.0) => a,
        (Op::Binary(BinaryOp::Add), &[a, b]) if is(a, -0.0) => b,
        (Op::Binary(BinaryOp::Sub), &[a, b]) if is(b, 0.0) => a,
        (Op::Unary(UnaryOp::Neg), &[a]) => match (&g.node(a).op, g.node(a).inputs.as_slice()) {
            (Op::Unary(UnaryOp::Neg), &[x]) => x,
            _ => return None,
        },
        _ => return None,
    };
    (*g.ty(x) == node.ty).then_some(x)
}
