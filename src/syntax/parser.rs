//! The pest parser and the conversion of its parse tree into the [`ast`].
//!
//! The grammar accepts a few common mistakes on purpose (the `bad_*` rules); the builder turns them
//! into precise diagnostics while still building the rest of the file, so that several such
//! mistakes are reported at once.

use super::ast::*;
use super::lex::{self, MAX_DEPTH};
use crate::diag::Diag;
use pest::iterators::{Pair, Pairs};
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/nn.pest"]
pub(super) struct NnParser;

/// Runs pest on the whole text; the error is pest's, converted by `super::error`.
pub(super) fn parse_tree(src: &str) -> Result<Pairs<'_, Rule>, Box<pest::error::Error<Rule>>> {
    NnParser::parse(Rule::file, src).map_err(Box::new)
}

/// Builds the AST of a successfully parsed file, collecting the diagnostics of error productions.
pub(super) fn build_file(mut pairs: Pairs<'_, Rule>) -> Result<File, Vec<Diag>> {
    let mut b = Builder { diags: Vec::new() };
    let mut items = Vec::new();
    if let Some(file) = pairs.next() {
        for p in file.into_inner() {
            let item = match p.as_rule() {
                Rule::model => b.model(p).map(Item::Model),
                Rule::data => b.data(p).map(Item::Data),
                Rule::train => b.train(p).map(Item::Train),
                _ => continue, // EOI
            };
            match item {
                Ok(i) => items.push(i),
                Err(d) => b.diags.push(*d),
            }
        }
    }
    if b.diags.is_empty() {
        Ok(File { items })
    } else {
        Err(b.diags)
    }
}

fn span(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(&p),
    }
}

/// The children of a pair without the keyword tokens, which carry no information.
fn inner(p: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    p.into_inner().filter(|c| {
        !matches!(
            c.as_rule(),
            Rule::kw_model
                | Rule::kw_data
                | Rule::kw_train
                | Rule::kw_on
                | Rule::kw_return
                | Rule::kw_as
                | Rule::kw_every
        )
    })
}

/// An expression with the depth of its tree, so that over-deep trees are refused before anything
/// recursive (checker, printer, even `Drop`) walks them.
type Built = (Expr, usize);

/// The builder's failures are rare and end the item: boxed, to keep results small.
type Res<T> = Result<T, Box<Diag>>;

struct Builder {
    diags: Vec<Diag>,
}

impl Builder {
    /// A name being defined (model, input, binding, data source, run, alias): the boolean
    /// constants `true` and `false` are names in value position, so they cannot be defined.
    fn binder(&mut self, p: Pair<'_, Rule>) -> Ident {
        let id = ident(p);
        if id.name == "true" || id.name == "false" {
            self.diags.push(
                Diag::new(
                    "nnc::syntax",
                    format!("`{}` is a constant and cannot be used as a name", id.name),
                    id.span,
                    "reserved name",
                )
                .help("choose another name"),
            );
        }
        id
    }

    fn model(&mut self, p: Pair<'_, Rule>) -> Res<Model> {
        let sp = span(&p);
        let mut it = inner(p).peekable();
        let name = self.binder(it.next().expect("grammar: model name"));
        let mut inputs = Vec::new();
        let mut output = None;
        let mut body = Vec::new();
        let mut bad_exprs: Vec<Span> = Vec::new();
        for c in it {
            match c.as_rule() {
                Rule::input => {
                    let mut ci = c.into_inner();
                    let n = self.binder(ci.next().expect("grammar: input name"));
                    let ty = self.type_expr(ci.next().expect("grammar: input type"))?;
                    inputs.push(InputDecl { name: n, ty });
                }
                Rule::type_expr => output = Some(self.type_expr(c)?),
                Rule::return_stmt => {
                    let start = span(&c).start;
                    let e = self
                        .expr(inner(c).next().expect("grammar: return value"))?
                        .0;
                    body.push(Stmt::Return {
                        span: Span::new(start, e.span.end),
                        value: e,
                    });
                }
                Rule::let_stmt => {
                    let mut ci = c.into_inner();
                    let n = self.binder(ci.next().expect("grammar: binding name"));
                    let e = self.expr(ci.next().expect("grammar: binding value"))?.0;
                    body.push(Stmt::Let {
                        span: n.span.to(e.span),
                        name: n,
                        value: e,
                    });
                }
                Rule::bad_colon_stmt => {
                    let mut ci = c.into_inner();
                    let n = ci.next().expect("grammar: name");
                    let nm = n.as_str().to_string();
                    let nsp = span(&n);
                    let colon = char_after(n.get_input(), nsp.end, ':').unwrap_or(nsp);
                    self.diags.push(
                        Diag::new(
                            "nnc::syntax",
                            "a model binds names with `=`, not `:`",
                            colon,
                            "expected `=`",
                        )
                        .help(format!("write `{nm} = ...`")),
                    );
                }
                Rule::bad_expr_stmt => {
                    let e = self.expr(c.into_inner().next().expect("grammar: expr"))?.0;
                    match e.as_name().map(|n| n.name.as_str()) {
                        Some(w @ ("let" | "var" | "val" | "const")) => self.diags.push(
                            Diag::new(
                                "nnc::syntax",
                                format!("`{w}` is not needed"),
                                e.span,
                                "remove this word",
                            )
                            .help("bind a name with `name = value`"),
                        ),
                        _ => bad_exprs.push(e.span),
                    }
                }
                _ => {}
            }
        }
        let has_return = body.iter().any(|s| matches!(s, Stmt::Return { .. }));
        for (i, s) in bad_exprs.iter().enumerate() {
            let last = i + 1 == bad_exprs.len() && !has_return;
            let d = if last {
                Diag::new(
                    "nnc::syntax",
                    "missing `return` before the model's result",
                    *s,
                    "this value is not returned",
                )
                .help("write `return` in front of the last expression")
            } else {
                Diag::new(
                    "nnc::syntax",
                    "an expression cannot stand alone in a model",
                    *s,
                    "expected `name = ...` or `return ...`",
                )
                .help("bind it to a name (`x = ...`) or return it (`return ...`)")
            };
            self.diags.push(d);
        }
        if !has_return && bad_exprs.is_empty() {
            let close = Span::new(sp.end.saturating_sub(1), sp.end);
            self.diags.push(
                Diag::new(
                    "nnc::syntax",
                    format!("model `{}` has no `return`", name.name),
                    close,
                    "expected `return <expr>` before this `}`",
                )
                .also(name.span, "model defined here")
                .help("end the body with `return x`, the model's output"),
            );
        }
        if let Some(pos) = body.iter().position(|s| matches!(s, Stmt::Return { .. })) {
            if let Some(next) = body.get(pos + 1) {
                let (Stmt::Let { span: nsp, .. } | Stmt::Return { span: nsp, .. }) = next;
                let Stmt::Return { span: rsp, .. } = &body[pos] else {
                    unreachable!()
                };
                self.diags.push(
                    Diag::new(
                        "nnc::syntax",
                        "statement after `return`",
                        *nsp,
                        "this comes after the model's `return`",
                    )
                    .also(*rsp, "the model returns here")
                    .help("`return` must be the last statement of a model, and there is only one"),
                );
            }
        }
        Ok(Model {
            name,
            inputs,
            output,
            body,
            span: sp,
        })
    }

    fn type_expr(&mut self, p: Pair<'_, Rule>) -> Res<TypeExpr> {
        let sp = span(&p);
        let mut dtype = None;
        let mut dims = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::dtype => dtype = Some(ident(c.into_inner().next().expect("grammar: dtype"))),
                _ => dims.push(self.expr(c)?.0),
            }
        }
        Ok(TypeExpr {
            dtype,
            dims,
            span: sp,
        })
    }

    fn data(&mut self, p: Pair<'_, Rule>) -> Res<Data> {
        let sp = span(&p);
        let mut it = inner(p);
        let name = self.binder(it.next().expect("grammar: data name"));
        let settings = self.settings(it)?;
        Ok(Data {
            name,
            settings,
            span: sp,
        })
    }

    fn train(&mut self, p: Pair<'_, Rule>) -> Res<Train> {
        let sp = span(&p);
        let mut it = inner(p).peekable();
        let mut name = None;
        if it.peek().map(|c| c.as_rule()) == Some(Rule::run_name) {
            name = Some(
                self.binder(
                    it.next()
                        .expect("peeked")
                        .into_inner()
                        .next()
                        .expect("grammar: run name"),
                ),
            );
        }
        let model = ident(it.next().expect("grammar: model name"));
        let data = ident(it.next().expect("grammar: data name"));
        let settings = self.settings(it)?;
        Ok(Train {
            name,
            model,
            data,
            settings,
            span: sp,
        })
    }

    fn settings<'i>(&mut self, pairs: impl Iterator<Item = Pair<'i, Rule>>) -> Res<Vec<Setting>> {
        let mut out = Vec::new();
        for c in pairs {
            let rule = c.as_rule();
            let src = c.get_input();
            let mut ci = c.into_inner();
            let key = ident(ci.next().expect("grammar: setting key"));
            let value = self.expr(ci.next().expect("grammar: setting value"))?.0;
            if rule == Rule::bad_eq_setting {
                let eq = char_after(src, key.span.end, '=').unwrap_or(key.span);
                self.diags.push(
                    Diag::new(
                        "nnc::syntax",
                        "settings are written `key: value`, not `key = value`",
                        eq,
                        "expected `:`",
                    )
                    .help(format!("write `{}: ...`", key.name)),
                );
            } else {
                out.push(Setting {
                    span: key.span.to(value.span),
                    key,
                    value,
                });
            }
        }
        Ok(out)
    }

    fn expr(&mut self, p: Pair<'_, Rule>) -> Res<Built> {
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
                let metrics = it.next().map_or_else(Vec::new, |m| {
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

/// The span of the token after byte `from` (skipping whitespace and comments), when it is `ch`.
fn char_after(src: &str, from: usize, ch: char) -> Option<Span> {
    let t = lex::token_at(src, from)?;
    (src.get(t.span.start..t.span.end) == Some(ch.encode_utf8(&mut [0; 4]))).then_some(t.span)
}
