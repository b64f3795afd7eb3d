//! Lowering a model body to IR: statements, names, arithmetic and `|>` stages. Layers themselves
//! are in [`super::layers`]. Errors poison the value they concern ([`V::Bad`]) so that one mistake
//! yields one diagnostic, not a cascade.

use super::activations;
use super::layers::{self, ACTIVATIONS, FUNCTIONS, LAYERS};
use super::models::Signature;
use super::names::{did_you_mean, show, snake_case};
use crate::diag::Diag;
use crate::ir::{BinaryOp, Graph, Op, UnaryOp, ValueId};
use crate::syntax::ast::{BinOp, Expr, ExprKind, Ident, Model, Span, Stmt};
use std::collections::HashMap;

/// A value during lowering: a tensor, a compile-time number, or poisoned by an earlier error.
#[derive(Clone, Copy, Debug)]
pub enum V {
    T(ValueId),
    N(f64),
    Bad,
}

/// The models of the file: their syntax and, once checked, their signatures.
pub struct Models<'a> {
    pub ast: HashMap<&'a str, &'a Model>,
    pub sigs: HashMap<String, Signature>,
}

/// State while lowering one model body into a graph (which may be a bigger model's graph).
pub struct Lower<'a, 'g> {
    pub models: &'a Models<'a>,
    pub g: &'g mut Graph,
    /// Parameter path prefix: `""` at the root, `encoder.` inside a sub-model.
    pub prefix: String,
    pub training: bool,
    pub diags: Vec<Diag>,
    /// The shape a flattened value had before `flatten`, to explain sizes (`3136 = 64×7×7`).
    pub flat_of: HashMap<ValueId, Vec<usize>>,
    counters: HashMap<&'static str, usize>,
    /// Instance names taken in this model (layer and sub-model names), for duplicates.
    instances: HashMap<String, Span>,
    vars: HashMap<String, V>,
    /// The first vocabulary size seen (`embedding(65, …)`, `one_hot(65)`), checked against classes.
    pub vocab: Option<(usize, Span)>,
    /// Whether loss functions (`mse`, `cross_entropy`, …) may be called: in a `loss:` setting.
    pub loss_mode: bool,
    /// Each `conv_transpose2d`'s and `upsample`'s node and call span, in order: a model that
    /// ends at another size than it declares is told what would fix its last one.
    pub transposed: Vec<(ValueId, Span)>,
}

impl<'a, 'g> Lower<'a, 'g> {
    pub fn new(models: &'a Models<'a>, g: &'g mut Graph, prefix: &str, training: bool) -> Self {
        Lower {
            models,
            g,
            prefix: prefix.to_string(),
            training,
            diags: Vec::new(),
            flat_of: HashMap::new(),
            counters: HashMap::new(),
            instances: HashMap::new(),
            vars: HashMap::new(),
            vocab: None,
            loss_mode: false,
            transposed: Vec::new(),
        }
    }

    /// Makes `name` refer to `v` (the loss sees `output`, `label`, the input and `teacher`).
    pub fn bind_var(&mut self, name: &str, v: V) {
        self.vars.insert(name.to_string(), v);
    }

    pub fn note_vocab(&mut self, n: usize, span: Span) {
        self.vocab.get_or_insert((n, span));
    }

    pub fn err(&mut self, d: Diag) -> V {
        self.diags.push(d);
        V::Bad
    }

    /// Appends a node whose type `ir::shape::infer` computes; its complaint becomes a diagnostic.
    pub fn push(&mut self, op: Op, inputs: Vec<ValueId>, label: &str, span: Span) -> V {
        let label = format!("{}{label}", self.prefix);
        match self.g.push(op, inputs, label) {
            Ok(v) => V::T(v),
            Err(msg) => self.err(Diag::new("nnc::shape", msg, span, "here")),
        }
    }

    /// The name of a new layer instance at `span`: its alias, or kind + the next free counter
    /// (`dense2`). A repeated alias is reported.
    pub fn instance(&mut self, kind: &'static str, alias: Option<&Ident>, span: Span) -> String {
        match alias {
            Some(a) => self.claim(a),
            None => {
                let c = self.counters.entry(kind).or_insert(0);
                let mut name = format!("{kind}{}", *c + 1);
                while self.instances.contains_key(&name) {
                    *c += 1;
                    name = format!("{kind}{}", *c + 1);
                }
                *c += 1;
                self.instances.insert(name.clone(), span);
                name
            }
        }
    }

    /// Records an alias, reporting a clash with an earlier instance name.
    fn claim(&mut self, alias: &Ident) -> String {
        if let Some(first) = self.instances.get(&alias.name) {
            let d = Diag::new(
                "nnc::name",
                format!("the name `{}` is already used in this model", alias.name),
                alias.span,
                "used again here",
            )
            .also(*first, "first used here")
            .help("give each layer a different name: parameters are addressed by these names");
            self.diags.push(d);
        } else {
            self.instances.insert(alias.name.clone(), alias.span);
        }
        alias.name.clone()
    }

    /// Lowers the statements of `model` with `input` bound to its input name.
    pub fn body(&mut self, model: &Model, input: ValueId) -> V {
        if let Some(decl) = model.inputs.first() {
            self.vars.insert(decl.name.name.clone(), V::T(input));
        }
        let mut ret: Option<(V, Span)> = None;
        for s in &model.body {
            if let Some((_, rspan)) = ret {
                let span = match s {
                    Stmt::Let { span, .. } | Stmt::Return { span, .. } => *span,
                };
                self.diags.push(
                    Diag::new(
                        "nnc::syntax",
                        "statement after `return`",
                        span,
                        "this is never reached",
                    )
                    .also(rspan, "the model returns here")
                    .help("`return` must be the last statement of a model"),
                );
                break;
            }
            match s {
                Stmt::Let { name, value, .. } => {
                    let v = self.expr(value);
                    self.vars.insert(name.name.clone(), v);
                }
                Stmt::Return { value, span } => ret = Some((self.expr(value), *span)),
            }
        }
        match ret {
            Some((V::N(_), span)) => self.err(
                Diag::new(
                    "nnc::shape",
                    format!("model `{}` returns a number", model.name.name),
                    span,
                    "not a tensor",
                )
                .help("a model returns a tensor computed from its input"),
            ),
            Some((v, _)) => v,
            None => self.err(
                Diag::new(
                    "nnc::syntax",
                    format!("model `{}` has no `return`", model.name.name),
                    model.name.span,
                    "this model returns nothing",
                )
                .help("end the body with `return <expression>`, e.g. `return x |> dense(10)`"),
            ),
        }
    }

    pub fn expr(&mut self, e: &Expr) -> V {
        match &e.kind {
            ExprKind::Number { value, .. } => V::N(*value),
            ExprKind::Path(p) if p.len() == 1 => self.var(&p[0]),
            ExprKind::Path(p) => {
                // `loss: nn.CrossEntropyLoss`: PyTorch's or Keras' name for what nnc has.
                let last = p.last().map_or("", |s| s.name.as_str());
                let help = match crate::syntax::frameworks::nnc_name_for(last) {
                    Some(h) => h,
                    None if self.loss_mode => {
                        "a loss calls nnc's loss functions on the run's values: \
                         `cross_entropy(output, label)`, `mse(output, label)`"
                    }
                    None => "inside a model, use the names bound by `=` and the model's input",
                };
                self.err(
                    Diag::new(
                        "nnc::name",
                        "dotted paths are not values",
                        e.span,
                        "not a value",
                    )
                    .help(help),
                )
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let (a, b) = (self.expr(lhs), self.expr(rhs));
                self.binary(*op, a, b, lhs, rhs, e.span)
            }
            ExprKind::Neg(a) => match self.expr(a) {
                V::N(n) => V::N(-n),
                V::T(v) => match self.not_f32(v, a) {
                    Some(d) => self.err(d),
                    None => self.push(Op::Unary(UnaryOp::Neg), vec![v], "neg", e.span),
                },
                V::Bad => V::Bad,
            },
            ExprKind::Call { callee, args } => self.call(callee, args, e.span),
            ExprKind::Pipe {
                input,
                stage,
                alias,
            } => {
                let v = self.expr(input);
                self.stage(v, input.span, stage, alias.as_ref())
            }
            ExprKind::Str(s) if self.loss_mode => {
                let help = if super::losses::FUNCTIONS.contains(&s.as_str()) {
                    format!("call it: {}", super::losses::usage(s))
                } else {
                    "a loss calls a loss function on tensors, e.g. \
                     `cross_entropy(output, label)` (Keras' \"sparse_categorical_crossentropy\") \
                     or `mse(output, label)`"
                        .into()
                };
                self.err(
                    Diag::new(
                        "nnc::train",
                        "expected a tensor, found a string",
                        e.span,
                        "a string",
                    )
                    .help(help),
                )
            }
            _ => self.err(Diag::new(
                "nnc::shape",
                format!(
                    "expected a tensor expression, found {}",
                    super::consts::describe(e)
                ),
                e.span,
                "not a tensor",
            )),
        }
    }

    fn var(&mut self, id: &Ident) -> V {
        if let Some(v) = self.vars.get(&id.name) {
            return *v;
        }
        let mut d = Diag::new(
            "nnc::name",
            format!("unknown name `{}`", id.name),
            id.span,
            "not defined",
        );
        if self.loss_mode && id.name == "teacher" {
            return self.err(d.help(
                "`teacher` is the teacher's output: set `teacher: <run>` in this train block",
            ));
        }
        if self.loss_mode && super::losses::FUNCTIONS.contains(&id.name.as_str()) {
            let usage = super::losses::usage(&id.name);
            return self.err(d.help(format!("a loss is called on its arguments: {usage}")));
        }
        // PyTorch and Keras spell the loss's two sides `y`/`target` and `pred`/`logits`; an
        // edit-distance guess would offer the input (`y` → `x`), the wrong side.
        if self.loss_mode {
            let side = match id.name.as_str() {
                "y" | "y_true" | "labels" | "target" | "targets" | "targ" => Some("label"),
                "pred" | "preds" | "y_pred" | "y_hat" | "logits" | "outputs" | "prediction"
                | "predictions" => Some("output"),
                _ => None,
            };
            if let Some(side) = side.filter(|n| self.vars.contains_key(*n)) {
                let what = if side == "label" {
                    "the data's labels or targets are"
                } else {
                    "the model's output is"
                };
                return self.err(d.help(format!(
                    "in a loss, {what} called `{side}`, as in `mse(output, label)`"
                )));
            }
        }
        let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        if let Some(h) = did_you_mean(&id.name, known) {
            d = d.help(h);
        } else if LAYERS.contains(&id.name.as_str())
            || ACTIVATIONS.contains(&id.name.as_str())
            || self.models.ast.contains_key(id.name.as_str())
        {
            d = d.help(format!(
                "`{0}` is a stage: apply it with `|>`, as in `x |> {0}`",
                id.name
            ));
        } else {
            let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
            names.sort();
            d = d.help(format!(
                "the names defined here are {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.err(d)
    }

    fn binary(&mut self, op: BinOp, a: V, b: V, lhs: &Expr, rhs: &Expr, span: Span) -> V {
        let ir = match op {
            BinOp::Add => BinaryOp::Add,
            BinOp::Sub => BinaryOp::Sub,
            BinOp::Mul => BinaryOp::Mul,
            BinOp::Div => BinaryOp::Div,
        };
        if let (BinOp::Div, V::T(_) | V::N(_), V::N(d)) = (op, a, b) {
            if d == 0.0 {
                let (code, what, help) = if self.loss_mode {
                    (
                        "nnc::train",
                        "the loss is divided by zero",
                        "a loss divided by 0 is infinite from the first step; weigh a term by a \
                         positive number instead, e.g. `0.5 * mse(output, label)`",
                    )
                } else {
                    (
                        "nnc::shape",
                        "division by zero",
                        "a value divided by 0 is infinite (or NaN); divide by a number other \
                         than 0",
                    )
                };
                return self.err(Diag::new(code, what, rhs.span, "this is 0").help(help));
            }
        }
        let (x, y) = match (a, b) {
            (V::Bad, _) | (_, V::Bad) => return V::Bad,
            (V::N(x), V::N(y)) => {
                return match op {
                    BinOp::Add => V::N(x + y),
                    BinOp::Sub => V::N(x - y),
                    BinOp::Mul => V::N(x * y),
                    BinOp::Div => V::N(x / y),
                }
            }
            (V::T(x), V::N(n)) => (x, self.g.constant(n as f32)),
            (V::N(n), V::T(y)) => (self.g.constant(n as f32), y),
            (V::T(x), V::T(y)) => {
                let (tx, ty) = (self.g.ty(x).clone(), self.g.ty(y).clone());
                if tx != ty {
                    let verb = match op {
                        BinOp::Add => "add",
                        BinOp::Sub => "subtract",
                        BinOp::Mul => "multiply",
                        BinOp::Div => "divide",
                    };
                    return self.err(
                        Diag::new(
                            "nnc::shape",
                            format!(
                                "cannot {verb} {} and {}: shapes differ",
                                show(&tx),
                                show(&ty)
                            ),
                            lhs.span,
                            format!("this is {}", show(&tx)),
                        )
                        .also(rhs.span, format!("this is {}", show(&ty)))
                        .help(format!(
                            "`{}` works on tensors of the same shape, or a tensor and a \
                             number{}",
                            op.symbol(),
                            shrunk_map_hint(&tx.dims, &ty.dims)
                        )),
                    );
                }
                (x, y)
            }
        };
        for (v, e) in [(x, lhs), (y, rhs)] {
            if let Some(d) = self.not_f32(v, e) {
                return self.err(d);
            }
        }
        self.push(Op::Binary(ir), vec![x, y], ir.name(), span)
    }

    /// Why the value `v` of `e` cannot take part in arithmetic (`x * 2`, `-x`): it holds ids.
    fn not_f32(&self, v: ValueId, e: &Expr) -> Option<Diag> {
        let ty = self.g.ty(v);
        (ty.dtype != crate::ir::DType::F32).then(|| {
            Diag::new(
                "nnc::shape",
                format!("arithmetic needs f32 values, found {}", show(ty)),
                e.span,
                "integer ids",
            )
            .help("token ids must go through `embedding` or `one_hot` first")
        })
    }

    /// `relu(x)`: an activation called on a value, or `concat(a, b)`. Layers and models must be
    /// used with `|>`.
    fn call(&mut self, callee: &Ident, args: &[crate::syntax::ast::Arg], span: Span) -> V {
        let name = callee.name.as_str();
        if self.loss_mode && super::losses::FUNCTIONS.contains(&name) {
            return super::losses::call(self, callee, args, span);
        }
        if name == "concat" {
            return super::concat::concat(self, callee, args, span);
        }
        if ACTIVATIONS.contains(&name) {
            let with_arguments = activations::takes_arguments(name);
            if args.is_empty() || args[0].name.is_some() || (args.len() > 1 && !with_arguments) {
                let (takes, help) = if with_arguments {
                    let call = format!("`{name}(x)`, `{name}(x, …)` with its arguments after it");
                    ("a tensor first", format!("write {call}, or `x |> {name}`"))
                } else {
                    ("one tensor", format!("write `{name}(x)` or `x |> {name}`"))
                };
                return self.err(
                    Diag::new(
                        "nnc::arg",
                        format!("{name}(…) takes {takes}"),
                        span,
                        format!("found {} arguments", args.len()),
                    )
                    .help(help),
                );
            }
            // `leaky_relu(x, 0.2)`: the activation's own arguments follow the tensor.
            let Some(op) = self.activation_op(callee, &args[1..], span) else {
                return V::Bad;
            };
            let v = self.expr(&args[0].value);
            return layers::activation(self, (name, op), name, v, args[0].value.span, span);
        }
        // `flatten(x)`, `Encoder(h)`: the value is the first argument, written before the pipe.
        let value = args
            .first()
            .filter(|a| a.name.is_none())
            .and_then(|a| a.value.as_name())
            .filter(|v| self.vars.contains_key(v.name.as_str()));
        let help = match value {
            Some(v) if args.len() == 1 => format!("apply it with `|>`: `{} |> {name}`", v.name),
            Some(v) => format!("apply it with `|>`: `{} |> {name}(…)`", v.name),
            None => format!(
                "apply it with `|>`: `x |> {}`",
                &self.src_call(callee, args)
            ),
        };
        if LAYERS.contains(&name) || self.models.ast.contains_key(name) {
            let what = if LAYERS.contains(&name) {
                "a layer"
            } else {
                "a model"
            };
            return self.err(
                Diag::new(
                    "nnc::syntax",
                    format!("`{name}` is {what}, not a function of a value"),
                    callee.span,
                    "used as a function",
                )
                .help(help),
            );
        }
        self.unknown_stage(callee)
    }

    fn src_call(&self, callee: &Ident, args: &[crate::syntax::ast::Arg]) -> String {
        if args.is_empty() {
            callee.name.clone()
        } else {
            format!("{}(…)", callee.name)
        }
    }

    pub fn unknown_stage(&mut self, id: &Ident) -> V {
        if self.loss_mode {
            let cands = super::losses::FUNCTIONS.iter().chain(ACTIVATIONS).copied();
            // PyTorch's and Keras' names of the losses nnc has under other names.
            let renamed = match id.name.as_str() {
                "nll_loss"
                | "nll"
                | "NLLLoss"
                | "CrossEntropyLoss"
                | "sparse_categorical_crossentropy"
                | "categorical_crossentropy" => Some(
                    "the classification loss is `cross_entropy(output, label)`: it takes logits \
                     and applies log_softmax itself (on a `log_softmax` output it gives the \
                     same value as `nll_loss`)",
                ),
                "bce" | "BCELoss" | "binary_crossentropy" => Some(
                    "the binary loss is `binary_cross_entropy(output, label)`, on probabilities \
                     (after `sigmoid`)",
                ),
                "mse_loss" | "MSELoss" | "mean_squared_error" => {
                    Some("the squared error is `mse(output, label)`")
                }
                _ => None,
            };
            let help = renamed
                .map(str::to_string)
                .or_else(|| did_you_mean(&id.name, cands));
            let help = help.unwrap_or_else(|| {
                format!(
                    "the loss functions are {}",
                    super::losses::FUNCTIONS.join(", ")
                )
            });
            return self.err(
                Diag::new(
                    "nnc::name",
                    format!("unknown loss function `{}`", id.name),
                    id.span,
                    "not a loss",
                )
                .help(help),
            );
        }
        let mut cands: Vec<&str> = LAYERS
            .iter()
            .chain(ACTIVATIONS)
            .chain(FUNCTIONS)
            .copied()
            .collect();
        cands.extend(self.models.ast.keys().copied());
        let mut d = Diag::new(
            "nnc::name",
            format!("unknown layer `{}`", id.name),
            id.span,
            "not a layer, activation or model",
        );
        // The names a PyTorch or Keras model uses for what nnc calls otherwise, or lacks.
        let renamed = crate::syntax::frameworks::nnc_name_for(&id.name);
        // Activations nnc lacks, many of them a letter or two from `relu` or `tanh`: "did you
        // mean `relu`?" would pass another function off as a misspelling, and the list of every
        // layer would not say that it is missing.
        let lacking = matches!(
            id.name.to_ascii_lowercase().as_str(),
            "selu"
                | "celu"
                | "relu6"
                | "prelu"
                | "rrelu"
                | "mish"
                | "softsign"
                | "hardtanh"
                | "hardswish"
                | "hardsigmoid"
                | "hard_sigmoid"
                | "glu"
                | "swiglu"
                | "geglu"
                | "tanhshrink"
                | "softshrink"
                | "hardshrink"
                | "threshold"
                | "logsigmoid"
        );
        let lacking = lacking.then(|| {
            format!(
                "nnc has no `{}` activation; the activations are {}",
                id.name,
                ACTIVATIONS.join(", ")
            )
        });
        d = d.help(
            match renamed
                .map(str::to_string)
                .or(lacking)
                .or_else(|| did_you_mean(&id.name, cands))
            {
                Some(h) => h,
                None => format!(
                    "the layers are {}; activations: {}",
                    LAYERS.join(", "),
                    ACTIVATIONS.join(", ")
                ),
            },
        );
        self.err(d)
    }

    /// `v |> stage [as alias]`.
    fn stage(&mut self, v: V, input_span: Span, stage: &Expr, alias: Option<&Ident>) -> V {
        let (callee, args): (&Ident, &[crate::syntax::ast::Arg]) = match &stage.kind {
            ExprKind::Call { callee, args } => (callee, args),
            ExprKind::Path(p) if p.len() == 1 => (&p[0], &[]),
            _ => {
                // `x |> nn.ReLU`, `x |> F.relu`: a module's name for a layer or activation.
                let last = match &stage.kind {
                    ExprKind::Path(p) => p.last().map(|i| i.name.as_str()),
                    _ => None,
                };
                let help = last.and_then(crate::syntax::frameworks::nnc_name_for);
                let help = help.map(str::to_string).unwrap_or_else(|| match last {
                    Some(l) if ACTIVATIONS.contains(&l) || LAYERS.contains(&l) => {
                        format!("nnc names its layers and activations alone: `x |> {l}`")
                    }
                    _ => "for example `x |> dense(10)`, `x |> relu` or `x |> Encoder`".into(),
                });
                return self.err(
                    Diag::new(
                        "nnc::syntax",
                        "expected a layer, an activation or a model after `|>`",
                        stage.span,
                        "not a stage",
                    )
                    .help(help),
                );
            }
        };
        let v = match v {
            V::N(n) => self.err(
                Diag::new(
                    "nnc::shape",
                    format!("`{n}` is a number, not a tensor"),
                    input_span,
                    "a number",
                )
                .help("stages apply to tensors"),
            ),
            v => v,
        };
        let name = callee.name.as_str();
        if ACTIVATIONS.contains(&name) {
            if !args.is_empty() && !activations::takes_arguments(name) {
                return self.err(
                    Diag::new(
                        "nnc::arg",
                        format!("{name} takes no arguments"),
                        stage.span,
                        "unexpected arguments",
                    )
                    .help(format!("write `|> {name}`")),
                );
            }
            // Activations have no parameters; a name given to one labels its node (`nnc ir`)
            // and may not be given to another stage of the model too.
            let Some(op) = self.activation_op(callee, args, stage.span) else {
                return V::Bad;
            };
            let label = alias.map_or_else(|| name.to_string(), |a| self.claim(a));
            return layers::activation(self, (name, op), &label, v, input_span, stage.span);
        }
        if FUNCTIONS.contains(&name) {
            return self.err(
                Diag::new(
                    "nnc::syntax",
                    format!("`{name}` is a function of several values, not a stage"),
                    callee.span,
                    "used as a stage",
                )
                .help(format!(
                    "call it on the values: `y = {name}(a, b)`, a pipeline's value bound to a \
                     name first (`a = x |> dense(8)`)"
                )),
            );
        }
        if let Some(&kind) = LAYERS.iter().find(|l| **l == name) {
            return layers::layer(self, kind, callee, args, stage.span, v, input_span, alias);
        }
        if self.models.ast.contains_key(name) {
            if !args.is_empty() {
                return self.err(
                    Diag::new(
                        "nnc::arg",
                        format!("model `{name}` takes no arguments"),
                        stage.span,
                        "unexpected arguments",
                    )
                    .help(format!("write `|> {name}`")),
                );
            }
            return self.submodel(callee, v, input_span, alias);
        }
        self.unknown_stage(callee)
    }

    /// The op of activation `callee` given its own arguments `args` (spanning `span`), or `None`
    /// with their errors reported.
    fn activation_op(
        &mut self,
        callee: &Ident,
        args: &[crate::syntax::ast::Arg],
        span: Span,
    ) -> Option<Op> {
        activations::op(callee, args, span)
            .map_err(|ds| self.diags.extend(ds))
            .ok()
    }

    /// Inlines another model: its parameters go under its instance name.
    fn submodel(&mut self, callee: &Ident, v: V, input_span: Span, alias: Option<&Ident>) -> V {
        let name = callee.name.as_str();
        let instance = match alias {
            Some(a) => self.claim(a),
            None => {
                let base = snake_case(name);
                let mut candidate = base.clone();
                let mut n = 1;
                while self.instances.contains_key(&candidate) {
                    n += 1;
                    candidate = format!("{base}{n}");
                }
                self.instances.insert(candidate.clone(), callee.span);
                candidate
            }
        };
        let (Some(sig), V::T(x)) = (self.models.sigs.get(name), v) else {
            return V::Bad;
        };
        if sig.output.is_none() {
            return V::Bad;
        }
        let got = self.g.ty(x).clone();
        if got != sig.input {
            return self.err(
                Diag::new(
                    "nnc::shape",
                    format!(
                        "model `{name}` takes {}, found {}",
                        show(&sig.input),
                        show(&got)
                    ),
                    callee.span,
                    format!("expects {}", show(&sig.input)),
                )
                .also(input_span, format!("this is {}", show(&got)))
                .help(format!(
                    "`{name}` is declared as `model {name}({}: {})`; its input must have that shape",
                    sig.input_name,
                    show(&sig.input)
                )),
            );
        }
        let model = self.models.ast[name];
        let prefix = format!("{}{instance}.", self.prefix);
        let mut inner = Lower::new(self.models, self.g, &prefix, self.training);
        // The sub-model was checked on its own; its diagnostics would only repeat.
        let v = inner.body(model, x);
        let convs = std::mem::take(&mut inner.transposed);
        self.transposed.extend(convs);
        v
    }
}

/// What to add where two images of one channel count differ in height and width by the same
/// amount: a convolution without padding shrank one of them (`x + (x |> conv2d(8, kernel: 3))`,
/// a residual connection), which `padding: "same"` would not have.
fn shrunk_map_hint(a: &[usize], b: &[usize]) -> String {
    match (a, b) {
        (&[c, h, w], &[c2, h2, w2]) if c == c2 && h != h2 && h.abs_diff(h2) == w.abs_diff(w2) => {
            format!(
                "; the maps differ by {} rows and columns, as a convolution without padding \
                 shrinks its input (by k − 1 for kernel k): `padding: \"same\"` keeps the size",
                h.abs_diff(h2)
            )
        }
        _ => String::new(),
    }
}
