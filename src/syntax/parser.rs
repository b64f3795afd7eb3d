//! The pest parser and the conversion of its parse tree into the [`ast`](super::ast).
//!
//! The grammar accepts a few common mistakes on purpose (the `bad_*` rules); the builder turns them
//! into precise diagnostics while still building the rest of the file, so that several such
//! mistakes are reported at once.

use super::ast::*;
use super::lex;
use crate::diag::Diag;
use pest::iterators::{Pair, Pairs};
use pest::Parser;

const CODE: &str = "nnc::syntax";

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

/// Whether a statement's value is a pipeline, which binds loosest.
fn ends_in_pipe(s: Option<&Stmt>) -> bool {
    let (Some(Stmt::Let { value, .. }) | Some(Stmt::Return { value, .. })) = s else {
        return false;
    };
    matches!(value.kind, ExprKind::Pipe { .. })
}

fn stmt_span(s: &Stmt) -> Span {
    match s {
        Stmt::Let { span, .. } | Stmt::Return { span, .. } => *span,
    }
}

pub(super) fn span(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

pub(super) fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(&p),
    }
}

/// The children of a pair without the keyword tokens, which carry no information.
pub(super) fn inner(p: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
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
pub(super) type Built = (Expr, usize);

/// The builder's failures are rare and end the item: boxed, to keep results small.
pub(super) type Res<T> = Result<T, Box<Diag>>;

pub(super) struct Builder {
    pub(super) diags: Vec<Diag>,
}

impl Builder {
    /// A name being defined (model, input, binding, data source, run, alias): the boolean
    /// constants `true` and `false` are names in value position, so they cannot be defined.
    pub(super) fn binder(&mut self, p: Pair<'_, Rule>) -> Ident {
        let id = ident(p);
        if id.name == "true" || id.name == "false" {
            self.diags.push(
                Diag::new(
                    CODE,
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
                            CODE,
                            "a model binds names with `=`, not `:`",
                            colon,
                            "expected `=`",
                        )
                        .help(format!("write `{nm} = ...`")),
                    );
                }
                Rule::bad_expr_stmt => {
                    let src = c.get_input();
                    let e = self.expr(c.into_inner().next().expect("grammar: expr"))?.0;
                    if let Some(d) = foreign_syntax(src, e.span) {
                        self.diags.push(d);
                        continue;
                    }
                    match e.as_name().map(|n| n.name.as_str()) {
                        Some(w @ ("let" | "var" | "val" | "const")) => self.diags.push(
                            Diag::new(
                                CODE,
                                format!("`{w}` is not needed"),
                                e.span,
                                "remove this word",
                            )
                            .help("bind a name with `name = value`"),
                        ),
                        _ if matches!(e.kind, ExprKind::Neg(_)) && ends_in_pipe(body.last()) => {
                            // `x |> f - 1` is `x |> f` followed by the statement `-1`.
                            self.diags.push(
                                Diag::new(
                                    CODE,
                                    "arithmetic after a pipeline stage",
                                    e.span,
                                    "this is read as a new statement",
                                )
                                .help("`|>` binds loosest: put the pipeline in parentheses, `(x |> f) - y`"),
                            );
                        }
                        _ => bad_exprs.push(e.span),
                    }
                }
                _ => {}
            }
        }
        self.body_rules(&name, sp, &body, &bad_exprs);
        Ok(Model {
            name,
            inputs,
            output,
            body,
            span: sp,
        })
    }

    /// The structure of a model body, which the grammar leaves loose: exactly one `return`, last.
    /// `bad_exprs` are expressions written as statements; the last of them, in a body without
    /// `return`, is most likely the result with `return` forgotten.
    fn body_rules(&mut self, name: &Ident, model: Span, body: &[Stmt], bad_exprs: &[Span]) {
        let ret = body.iter().position(|s| matches!(s, Stmt::Return { .. }));
        for (i, s) in bad_exprs.iter().enumerate() {
            let d = if i + 1 == bad_exprs.len() && ret.is_none() {
                Diag::new(
                    CODE,
                    "missing `return` before the model's result",
                    *s,
                    "this value is not returned",
                )
                .help("write `return` in front of the last expression")
            } else {
                Diag::new(
                    CODE,
                    "an expression cannot stand alone in a model",
                    *s,
                    "expected `name = ...` or `return ...`",
                )
                .help("bind it to a name (`x = ...`) or return it (`return ...`)")
            };
            self.diags.push(d);
        }
        let Some(ret) = ret else {
            if bad_exprs.is_empty() {
                let close = Span::new(model.end.saturating_sub(1), model.end);
                self.diags.push(
                    Diag::new(
                        CODE,
                        format!("model `{}` has no `return`", name.name),
                        close,
                        "expected `return <expr>` before this `}`",
                    )
                    .also(name.span, "model defined here")
                    .help("end the body with `return x`, the model's output"),
                );
            }
            return;
        };
        if let Some(next) = body.get(ret + 1) {
            self.diags.push(
                Diag::new(
                    CODE,
                    "statement after `return`",
                    stmt_span(next),
                    "this comes after the model's `return`",
                )
                .also(stmt_span(&body[ret]), "the model returns here")
                .help("`return` must be the last statement of a model, and there is only one"),
            );
        }
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
                        CODE,
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
}

/// The span of the token after byte `from` (skipping whitespace and comments), when it is `ch`.
fn char_after(src: &str, from: usize, ch: char) -> Option<Span> {
    let t = lex::token_at(src, from)?;
    (src.get(t.span.start..t.span.end) == Some(ch.encode_utf8(&mut [0; 4]))).then_some(t.span)
}

/// A statement that the grammar split off the end of the one before, because Python wrote it
/// there: `F.relu(x)` or `x.view(-1)` (a call on a method or module: `(x)` stands alone),
/// `h[-1]` (indexing), `return a, b` (two results). `at` is the stray expression.
fn foreign_syntax(src: &str, at: Span) -> Option<Diag> {
    let before = src[..at.start].chars().next_back()?;
    let opens = src[at.start..].chars().next()?;
    let glued = before.is_alphanumeric() || before == '_' || before == ')';
    let (msg, label, help) = match (glued, opens) {
        (true, '(') if before != ')' => {
            let toks = super::lex::tokens(src);
            if let Some(d) = super::frameworks::dotted_before(src, &toks, at.start) {
                return Some(d);
            }
            (
                "nnc has no method or module calls",
                "a call on what comes before",
                "apply layers and activations with `|>`: `x |> dense(128) |> relu`, `x |> flatten`",
            )
        }
        (true, '(') => (
            "nnc has no method or module calls",
            "a call on what comes before",
            "apply layers and activations with `|>`: `x |> dense(128) |> relu`, `x |> flatten`",
        ),
        (true, '[') => (
            "nnc has no indexing",
            "an index",
            "a model maps a whole sample to a whole output; an rnn's output holds every step",
        ),
        // `return a, b`: the comma on the line of a `return` (a trailing comma after a
        // statement, or in a comment, is no second value).
        _ if returns_on_line(src, at.start) => (
            "a model returns one value",
            "a second value",
            "return one tensor; a run's loss may use the model's input and output",
        ),
        _ => return None,
    };
    Some(Diag::new(CODE, msg, at, label).help(help))
}

/// Whether the line up to byte `at` is `return <value>,`.
fn returns_on_line(src: &str, at: usize) -> bool {
    let line = &src[src[..at].rfind('\n').map_or(0, |n| n + 1)..at];
    let line = line.trim();
    line.starts_with("return") && line.ends_with(',') && !line.contains("//")
}
