//! The abstract syntax tree of a `.nn` file, exactly as written, with source spans.
//!
//! Nothing here is resolved or checked: names are strings and numbers are `f64`.
//! The checker (`crate::check`) turns this into typed IR.

/// A byte range into the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
    pub fn len(self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start, s.end - s.start).into()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole `.nn` file: models, data sources and training runs, in source order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Model(Model),
    Data(Data),
    Train(Train),
}

/// `model Name(input: [dims], ...) -> [dims] { statements }`
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    /// The declared output type (`-> [10]`), checked against the inferred one when present.
    pub output: Option<TypeExpr>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// `image: [1, 28, 28]` or `tokens: i32[64]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub ty: TypeExpr,
}

/// A tensor type without the (implicit) batch dimension: `f32[1, 28, 28]`, `[784]`, `i32[64]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    /// `f32` or `i32`; `None` means f32.
    pub dtype: Option<Ident>,
    pub dims: Vec<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `name = expr`
    Let {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `return expr`
    Return { value: Expr, span: Span },
}

/// `data name { key: value ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    pub name: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// `train [run_name:] Model on data { key: value ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Train {
    /// The run's name; defaults to the model's name when not written.
    pub name: Option<Ident>,
    pub model: Ident,
    pub data: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

/// `key: value` inside a `data` or `train` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `64`, `0.01`, `1e-4`; `text` keeps the spelling (to tell `3` from `3.0`).
    Number { value: f64, text: String },
    /// `"train-images-idx3-ubyte.gz"`
    Str(String),
    /// A name, or a dotted path such as `encoder.dense1` (one segment for a plain name).
    Path(Vec<Ident>),
    /// `[a, b, c]`
    List(Vec<Expr>),
    /// `{ encoder: 0.1, head: 1.0 }`
    Map(Vec<(Ident, Expr)>),
    /// `dense(128)`, `sgd(lr: 0.1, momentum: 0.9)`, `idx("a", "b")`
    Call { callee: Ident, args: Vec<Arg> },
    /// `input |> stage [as alias]`; the stage is a `Path` (`relu`, `Encoder`) or a `Call` (`dense(10)`).
    Pipe {
        input: Box<Expr>,
        stage: Box<Expr>,
        alias: Option<Ident>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `-x`
    Neg(Box<Expr>),
    /// `every 1 epoch [loss, accuracy]`; `unit` is `epoch`/`epochs`/`step`/`steps`; `metrics` is
    /// `None` without a list, and may be an empty one (`[]`).
    Every {
        count: Box<Expr>,
        unit: Ident,
        metrics: Option<Vec<Ident>>,
    },
}

/// A call argument: positional (`128`) or named (`kernel: 3`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Expr {
    /// The single name of a one-segment path, if this is one.
    pub fn as_name(&self) -> Option<&Ident> {
        match &self.kind {
            ExprKind::Path(p) if p.len() == 1 => Some(&p[0]),
            _ => None,
        }
    }
}
