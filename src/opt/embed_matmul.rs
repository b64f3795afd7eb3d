//! Embedding–product reassociation: a matrix product of looked-up rows is a look-up in the
//! product of the table.
//!
//! `embedding(ids, E) · W` has one row per token of the batch (B·T for a sequence), while
//! `E · W` has one per entry of the vocabulary, and the first is the second's rows picked by
//! `ids`. When the vocabulary is small beside the tokens of a batch (the character model: 65
//! entries, 2,048 tokens a batch), the product of the table is the cheaper one by that ratio.
//! So, where `x = embedding(ids, E)`:
//!
//! - forward: `x · W` becomes `embedding(ids, E · W)`, and a bias added to that product moves
//!   before the look-up (`embedding(ids, E · W + b)`, each row gets the same bias), where the
//!   epilogue pass then fuses it into the small product;
//! - backward, the weight gradient `xᵀ · dY` becomes `Eᵀ · G` and the table's gradient
//!   `embedding_grad(ids, dY · Wᵀ)` becomes `G · Wᵀ`, with `G = embedding_grad(ids, dY)` (the
//!   rows of `dY` summed per token, computed once for both).
//!
//! Each is an identity of linear algebra, so the results are those of the separate ops up to
//! the order of the additions (the gradients sum per token first). The products left unused,
//! and the look-up `x` once nothing reads it, are removed by the dead-code elimination after.
//!
//! Applied where the vocabulary has at most [`MAX_VOCAB_PER_ROW`] entries per row of one
//! sample, so that from a batch of that many samples on, the rewrite does fewer operations.
//! (The batch size is not part of the graph; a model whose vocabulary is larger than that, a
//! word-level one, keeps its per-token products.)

use std::collections::HashMap;

use super::rewrite::{use_counts, Rewriter};
use super::Pass;
use crate::ir::{shape, Graph, Op, Type, ValueId};

/// The largest vocabulary, per row of a sample, for which products are moved to the table.
pub const MAX_VOCAB_PER_ROW: usize = 8;

/// The embedding–product reassociation pass ([`reassociate`]).
pub struct EmbedMatmul;

impl Pass for EmbedMatmul {
    fn name(&self) -> &'static str {
        "embed-matmul"
    }
    fn run(&self, g: &Graph) -> Graph {
        reassociate(g)
    }
}

/// How one node is rewritten.
#[derive(Clone, Copy, Debug)]
enum Rewrite {
    /// `x · W` (`tb` as given) with `x` a look-up: the look-up of `E · W`, plus the bias of
    /// node `bias` (a `BiasAdd` reading only this product) when given, emitted at the bias.
    Forward {
        ids: ValueId,
        table: ValueId,
        w: ValueId,
        tb: bool,
        bias: Option<usize>,
    },
    /// The bias add absorbed by a `Forward` rewrite: emitted there.
    Bias { product: usize },
    /// `xᵀ · dy` with `x` a look-up in a table of `vocab` rows: `Eᵀ · embedding_grad(ids, dy)`.
    WeightGrad {
        ids: ValueId,
        table: ValueId,
        vocab: usize,
        dy: ValueId,
    },
    /// `embedding_grad(ids, dy · Wᵀ)` for a table of `vocab` rows: `embedding_grad(ids, dy) · Wᵀ`.
    TableGrad {
        ids: ValueId,
        vocab: usize,
        dy: ValueId,
        w: ValueId,
        tb: bool,
    },
}

/// The look-up `v` is, if it is one worth moving products through: `(ids, table)`.
fn lookup(g: &Graph, v: ValueId) -> Option<(ValueId, ValueId)> {
    let n = g.node(v);
    if n.op != Op::Embedding {
        return None;
    }
    let vocab = g.ty(n.inputs[1]).dims[0];
    let rows = n.ty.per_sample() / n.ty.last().max(1);
    (vocab <= MAX_VOCAB_PER_ROW * rows).then_some((n.inputs[0], n.inputs[1]))
}

/// Whether `op` on inputs `ins` type-checks in `g` (every rewrite's new nodes are checked
/// before anything is changed).
fn fits(g: &Graph, op: &Op, ins: &[ValueId]) -> bool {
    let tys: Vec<_> = ins.iter().map(|v| g.ty(*v)).collect();
    shape::infer(op, &tys, &g.params).is_ok()
}

/// Whether `embedding_grad(ids, dy)` is well typed: one row of `dy` per id.
fn sums_fit(g: &Graph, ids: ValueId, dy: ValueId) -> bool {
    let (ids, dy) = (g.ty(ids), g.ty(dy));
    ids.batched == dy.batched && dy.per_sample() == ids.per_sample() * dy.last()
}

fn find(g: &Graph) -> Vec<Option<Rewrite>> {
    let readers = use_counts(g);
    let mut rw: Vec<Option<Rewrite>> = vec![None; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        match n.op {
            Op::MatMul { ta: false, tb } => {
                let [x, w] = n.inputs[..] else { continue };
                let Some((ids, table)) = lookup(g, x) else {
                    continue;
                };
                if g.ty(w).batched || !fits(g, &n.op, &[table, w]) {
                    continue;
                }
                // The bias add that is this product's only reader, along its last axis.
                let bias = g.nodes.iter().enumerate().skip(i + 1).find_map(|(j, m)| {
                    let along_last =
                        matches!(m.op, Op::BiasAdd { axis } if axis + 1 == n.ty.rank());
                    (along_last && m.inputs[0].index() == i && readers[i] == 1).then_some(j)
                });
                if let Some(j) = bias {
                    rw[j] = Some(Rewrite::Bias { product: i });
                }
                rw[i] = Some(Rewrite::Forward {
                    ids,
                    table,
                    w,
                    tb,
                    bias,
                });
            }
            Op::MatMul {
                ta: true,
                tb: false,
            } => {
                let [x, dy] = n.inputs[..] else { continue };
                let Some((ids, table)) = lookup(g, x) else {
                    continue;
                };
                if sums_fit(g, ids, dy) {
                    let vocab = g.ty(table).dims[0];
                    rw[i] = Some(Rewrite::WeightGrad {
                        ids,
                        table,
                        vocab,
                        dy,
                    });
                }
            }
            Op::EmbeddingGrad => {
                let [ids, dx] = n.inputs[..] else { continue };
                let p = g.node(dx);
                let Op::MatMul { ta: false, tb } = p.op else {
                    continue;
                };
                let [dy, w] = p.inputs[..] else { continue };
                // Only where the vocabulary is small (as for a look-up of that table).
                let vocab = n.ty.dims.first().copied().unwrap_or(usize::MAX);
                let rows = p.ty.per_sample() / p.ty.last().max(1);
                if readers[dx.index()] == 1
                    && !g.ty(w).batched
                    && vocab <= MAX_VOCAB_PER_ROW * rows
                    && sums_fit(g, ids, dy)
                {
                    rw[i] = Some(Rewrite::TableGrad {
                        ids,
                        vocab,
                        dy,
                        w,
                        tb,
                    });
                }
            }
            _ => {}
        }
    }
    rw
}

/// `g` with the products of looked-up rows moved to the table (see the module's comment).
pub fn reassociate(g: &Graph) -> Graph {
    let rw = find(g);
    if rw.iter().all(Option::is_none) {
        return g.clone();
    }
    let mut r = Rewriter::new(g);
    // G = embedding_grad(ids, dy), shared by the two gradients that need it.
    let mut sums: HashMap<(ValueId, ValueId), ValueId> = HashMap::new();
    let mut sum = |r: &mut Rewriter, ids: ValueId, vocab: usize, dy: ValueId, label: &str| {
        let (ids, dy) = (r.get(ids), r.get(dy));
        let ty = Type::f32(false, vec![vocab, r.new.ty(dy).last()]);
        *sums.entry((ids, dy)).or_insert_with(|| {
            r.new
                .push_typed(Op::EmbeddingGrad, vec![ids, dy], ty, label)
        })
    };
    let push = |r: &mut Rewriter, op: Op, ins: Vec<ValueId>, label: &str| {
        r.new.push(op, ins, label).expect("checked by find")
    };
    for (i, node) in g.nodes.iter().enumerate() {
        let label = node.label.as_str();
        let v = match rw[i] {
            None => r.push(r.mapped(i)),
            Some(Rewrite::Forward { bias: Some(_), .. }) => {
                // Emitted at its bias add, its only reader.
                ValueId(u32::MAX)
            }
            Some(Rewrite::Forward {
                ids,
                table,
                w,
                tb,
                bias: None,
            }) => {
                let (t, w) = (r.get(table), r.get(w));
                let q = push(&mut r, Op::MatMul { ta: false, tb }, vec![t, w], label);
                let ids = r.get(ids);
                push(&mut r, Op::Embedding, vec![ids, q], label)
            }
            Some(Rewrite::Bias { product }) => {
                let Some(Rewrite::Forward {
                    ids, table, w, tb, ..
                }) = rw[product]
                else {
                    unreachable!("a bias is absorbed only by a forward rewrite")
                };
                let (t, w) = (r.get(table), r.get(w));
                let plabel = g.nodes[product].label.as_str();
                let q = push(&mut r, Op::MatMul { ta: false, tb }, vec![t, w], plabel);
                let b = r.get(node.inputs[1]);
                let qb = push(&mut r, Op::BiasAdd { axis: 1 }, vec![q, b], label);
                let ids = r.get(ids);
                push(&mut r, Op::Embedding, vec![ids, qb], label)
            }
            Some(Rewrite::WeightGrad {
                ids,
                table,
                vocab,
                dy,
            }) => {
                let s = sum(&mut r, ids, vocab, dy, label);
                let t = r.get(table);
                push(
                    &mut r,
                    Op::MatMul {
                        ta: true,
                        tb: false,
                    },
                    vec![t, s],
                    label,
                )
            }
            Some(Rewrite::TableGrad {
                ids,
                vocab,
                dy,
                w,
                tb,
            }) => {
                let s = sum(&mut r, ids, vocab, dy, label);
                let w = r.get(w);
                push(&mut r, Op::MatMul { ta: false, tb }, vec![s, w], label)
            }
        };
        r.define(v);
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval;
    use crate::opt::dce::dce;

    /// The char-RNN's input layer with its gradients (as autodiff writes them), and a product
    /// of a look-up whose vocabulary is too large to move.
    fn graph() -> Graph {
        let mut g = Graph::new("e", true);
        let ids = g.input("ids", Type::i32(true, vec![4]));
        let e = g.input("e", Type::f32(false, vec![5, 3]));
        let w = g.input("w", Type::f32(false, vec![3, 2]));
        let b = g.input("b", Type::f32(false, vec![2]));
        let dy = g.input("dy", Type::f32(true, vec![4, 2]));
        let big = g.input("big", Type::f32(false, vec![40, 3]));
        let x = g.push(Op::Embedding, vec![ids, e], "x").unwrap();
        let p = g
            .push(
                Op::MatMul {
                    ta: false,
                    tb: false,
                },
                vec![x, w],
                "p",
            )
            .unwrap();
        let y = g.push(Op::BiasAdd { axis: 2 }, vec![p, b], "y").unwrap();
        let gw = g
            .push(
                Op::MatMul {
                    ta: true,
                    tb: false,
                },
                vec![x, dy],
                "gw",
            )
            .unwrap();
        let dx = g
            .push(
                Op::MatMul {
                    ta: false,
                    tb: true,
                },
                vec![dy, w],
                "dx",
            )
            .unwrap();
        let ge = g.push_typed(
            Op::EmbeddingGrad,
            vec![ids, dx],
            Type::f32(false, vec![5, 3]),
            "ge",
        );
        let xb = g.push(Op::Embedding, vec![ids, big], "xb").unwrap();
        let pb = g
            .push(
                Op::MatMul {
                    ta: false,
                    tb: false,
                },
                vec![xb, w],
                "pb",
            )
            .unwrap();
        for (name, v) in [("y", y), ("gw", gw), ("ge", ge), ("pb", pb)] {
            g.set_output(name, v);
        }
        g
    }

    #[test]
    fn products_of_looked_up_rows_move_to_the_table() {
        let g = graph();
        let r = dce(&reassociate(&g));
        crate::ir::verify::verify(&r).unwrap();
        let text: Vec<String> = r
            .nodes
            .iter()
            .filter(|n| !matches!(n.op, Op::Input { .. }))
            .map(|n| {
                let ins: Vec<String> = n.inputs.iter().map(|v| v.to_string()).collect();
                format!(
                    "{}{} {} : {}",
                    n.op.name(),
                    n.op.attrs(),
                    ins.join(", "),
                    n.ty
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                "matmul %1, %2 : f32[5,2]",
                "bias_add axis=1 %6, %3 : f32[5,2]",
                "embedding %0, %7 : f32[B,4,2]",
                "embedding_grad %0, %4 : f32[5,2]",
                "matmul ta %1, %9 : f32[3,2]",
                "matmul tb %9, %2 : f32[5,3]",
                // The 40-entry table stays: 40 > 8 × 4 rows.
                "embedding %0, %5 : f32[B,4,3]",
                "matmul %12, %2 : f32[B,4,2]",
            ]
        );
        let batch = 3;
        let ins: Vec<Vec<f64>> = g
            .inputs()
            .iter()
            .enumerate()
            .map(|(k, (v, _))| {
                let n = g.ty(*v).numel(batch);
                if k == 0 {
                    (0..n).map(|i| ((i * 3) % 5) as f64).collect()
                } else {
                    (0..n)
                        .map(|i| ((i * 7 + k) % 11) as f64 / 4.0 - 1.0)
                        .collect()
                }
            })
            .collect();
        let before = eval(&g, batch, &ins, &[], Default::default()).unwrap();
        let after = eval(&r, batch, &ins, &[], Default::default()).unwrap();
        for o in ["y", "gw", "ge", "pb"] {
            let (a, b) = (
                &before[g.output(o).unwrap().index()],
                &after[r.output(o).unwrap().index()],
            );
            assert_eq!(a.len(), b.len(), "{o}");
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-12, "{o}: {x} vs {y}");
            }
        }
        // Nothing left to move.
        assert_eq!(dce(&reassociate(&r)), r);
    }
}
