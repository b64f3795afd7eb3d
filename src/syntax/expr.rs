//! Expressions: the parse tree of `expr` and its levels to [`Expr`], with spans computed from
//! the operands (so that they never include trailing whitespace) and a depth guard.

use super::ast::*;
use super::lex::MAX_DEPTH;
use super::parser::{ident, inner, span, Builder, Built, Res, Rule};
use crate::diag::Diag;
use pest::iterators::Pair;

impl Builder {
    pub(super) fn expr(&mut self, p: Pair<'_, Rule>) -> Res<Built> {
        match p.as_rule() {
            Rule::expr => {
                let mut it = p.into_inner().peekable();
                let mut acc = self.expr(it.next().expect("grammar: pipeline head"))?;
                while let Some(op) = it.next() {
                    debug_assert_eq!(op.as_rule(), Rule::pipe_op);
                    let stage = it.next().expect("grammar: stage");
                    let stage =
                        self.expr(stage.into_inner().next().expect("grammar: stage body"))?;
                    let mut alias = None;
                    if it.peek().map(|c| c.as_rule()) == Some(Rule::alias) {
                        let a = it.next().expect("peeked");
                        alias = Some(self.binder(inner(a).next().expect("grammar: alias name")));
                    }
                    let end = alias.as_ref().map_or(stage.0.span, |a: &Ident| a.span);
                    let sp = acc.0.span.to(end);
                    let depth = acc.1.max(stage.1) + 1;
                    let kind = ExprKind::Pipe {
                        input: Box::new(acc.0),
                        stage: Box::new(stage.0),
                        alias,
                    };
                    acc = deep_check((Expr { kind, span: sp }, depth))?;
                }
                Ok(acc)
            }
            Rule::sum | Rule::product => {
                let mut it = p.into_inner();
                let mut acc = self.expr(it.next().expect("grammar: operand"))?;
                while let Some(op) = it.next() {
                    let op = match op.as_str() {
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        _ => BinOp::Div,
                    };
                    let rhs = self.expr(it.next().expect("grammar: operand"))?;
                    let sp = acc.0.span.to(rhs.0.span);
                    let depth = acc.1.max(rhs.1) + 1;
                    let kind = ExprKind::Binary {
                        op,
                        lhs: Box::new(acc.0),
                        rhs: Box::new(rhs.0),
                    };
                    acc = deep_check((Expr { kind, span: sp }, depth))?;
                }
                Ok(acc)
            }
            Rule::unary => {
                let negs: Vec<Span> = p
                    .clone()
                    .into_inner()
                    .filter(|c| c.as_rule() == Rule::neg)
                    .map(|c| span(&c))
                    .collect();
                let operand = p
                    .into_inner()
                    .find(|c| c.as_rule() != Rule::neg)
                    .expect("grammar: operand");
                let mut acc = self.expr(operand)?;
                for n in negs.into_iter().rev() {
                    let sp = n.to(acc.0.span);
                    let depth = acc.1 + 1;
                    acc = deep_check((
                        Expr {
                            kind: ExprKind::Neg(Box::new(acc.0)),
                            span: sp,
                        },
                        depth,
                    ))?;
                }
                Ok(acc)
            }
            Rule::paren => {
                let sp = span(&p);
                let (mut e, d) =
                    self.expr(p.into_inner().next().expect("grammar: parenthesized"))?;
                e.span = sp;
                Ok((e, d))
            }
            Rule::number => Ok((number(&p)?, 1)),
            Rule::string => {
                let sp = span(&p);
                let body = p.into_inner().next().expect("grammar: string body");
                let s = unescape(body.as_str(), body.as_span().start())?;
                Ok((
                    Expr {
                        kind: ExprKind::Str(s),
                        span: sp,
                    },
                    1,
                ))
            }
            Rule::path => {
                let sp = span(&p);
                let segs = p.into_inner().map(ident).collect();
                Ok((
                    Expr {
                        kind: ExprKind::Path(segs),
                        span: sp,
                    },
                    1,
                ))
            }
            Rule::call => {
                let sp = span(&p);
                let mut it = p.into_inner();
                let callee = ident(it.next().expect("grammar: callee"));
                let mut args = Vec::new();
                let mut depth = 1;
                for a in it {
                    let mut ai = a.into_inner().peekable();
                    let mut name = None;
                    if ai.peek().map(|c| c.as_rule()) == Some(Rule::arg_name) {
                        name = Some(ident(
                            ai.next()
                                .expect("peeked")
                                .into_inner()
                                .next()
                                .expect("grammar: word"),
                        ));
                    }
                    let (value, d) = self.expr(ai.next().expect("grammar: argument value"))?;
                    depth = depth.max(d + 1);
                    args.push(Arg { name, value });
                }
                Ok((
                    Expr {
                        kind: ExprKind::Call { callee, args },
                        span: sp,
                    },
                    depth,
                ))
            }
            Rule::list => {
                let sp = span(&p);
                let mut items = Vec::new();
                let mut depth = 1;
                for c in p.into_inner() {
                    let (e, d) = self.expr(c)?;
                    depth = depth.max(d + 1);
                    items.push(e);
                }
                Ok((
                    Expr {
                        kind: ExprKind::List(items),
                        span: sp,
                    },
                    depth,
                ))
            }
            Rule::map => {
                let sp = span(&p);
                let mut entries = Vec::new();
                let mut depth = 1;
                for c in p.into_inner() {
                    let mut ci = c.into_inner();
                    let key = ident(ci.next().expect("grammar: map key"));
                    let (e, d) = self.expr(ci.next().expect("grammar: map value"))?;
                    depth = depth.max(d + 1);
                    entries.push((key, e));
                }
                Ok((
                    Expr {
                        kind: ExprKind::Map(entries),
                        span: sp,
                    },
                    depth,
                ))
            }
            Rule::every => {
                let mut sp = span(&p);
                let mut it = inner(p);
                let (count, d) = self.expr(it.next().expect("grammar: every count"))?;
                let unit = ident(it.next().expect("grammar: every unit"));
                sp.end = unit.span.end;
                let metrics = it.next().map(|m| {
                    sp.end = span(&m).end;
                    m.into_inner().map(ident).collect()
                });
                let kind = ExprKind::Every {
                    count: Box::new(count),
                    unit,
                    metrics,
                };
                Ok((Expr { kind, span: sp }, d + 1))
            }
            r => unreachable!("grammar: unexpected rule {r:?} in an expression"),
        }
    }
}

/// Refuses trees deeper than [`MAX_DEPTH`] (long operator chains or pipelines nest one level per
/// operator).
fn deep_check(b: Built) -> Res<Built> {
    if b.1 > MAX_DEPTH {
        return Err(Box::new(
            Diag::new(
                "nnc::syntax",
                format!("expression is nested too deeply (more than {MAX_DEPTH} levels)"),
                b.0.span,
                "this expression is too deep",
            )
            .help("split it into several `name = ...` statements"),
        ));
    }
    Ok(b)
}

fn number(p: &Pair<'_, Rule>) -> Res<Expr> {
    let text = p.as_str();
    let sp = span(p);
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Expr {
            kind: ExprKind::Number {
                value: v,
                text: text.to_string(),
            },
            span: sp,
        }),
        _ => Err(Box::new(
            Diag::new(
                "nnc::syntax",
                format!("number `{text}` is too large"),
                sp,
                "not a finite 64-bit float",
            )
            .help("numbers must be below about 1.8e308"),
        )),
    }
}

/// Resolves `\"`, `\\`, `\n` and `\t`; `start` is the byte offset of `body` in the file.
fn unescape(body: &str, start: usize) -> Res<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '"')) => out.push('"'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((j, other)) => {
                let sp = Span::new(start + i, start + j + other.len_utf8());
                return Err(Box::new(
                    Diag::new(
                        "nnc::syntax",
                        format!("unknown escape `\\{other}` in a string"),
                        sp,
                        "unknown escape",
                    )
                    .help("strings know the escapes `\\\"`, `\\\\`, `\\n` and `\\t`"),
                ));
            }
            None => out.push('\\'),
        }
    }
    Ok(out)
}
