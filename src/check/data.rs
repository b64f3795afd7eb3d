//! `data` blocks → [`DataSpec`]: sources, split, and the `normalize` expression of `x`.

use super::args::{bind, Sig};
use super::consts;
use super::settings::Settings;
use crate::diag::Diag;
use crate::ir::{DataSpec, ScalarExpr, Source};
use crate::syntax::ast::{BinOp, Data, Expr, ExprKind};

/// What the checker needs to know about a data source to match it with a model and a loss.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Rows written in the file. `classes` is set when every target is one whole number ≥ 0
    /// (they can then be class ids: the largest + 1). `x_ids` and `y_ids` are set when every
    /// input, or every target, is a whole number ≥ 0 (they can then be token or class ids, one
    /// per position: the largest + 1).
    Inline {
        x_width: usize,
        y_width: usize,
        classes: Option<usize>,
        x_ids: Option<usize>,
        y_ids: Option<usize>,
    },
    /// IDX images (u8 → f32) with i32 class labels.
    Idx,
    /// CSV rows: f32 features and one label column.
    Csv,
    /// Characters as i32 ids, `seq` of them per sample, labels the next `seq` ids.
    Text { seq: usize },
}

impl Kind {
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Inline { .. } => "inline",
            Kind::Idx => "idx",
            Kind::Csv => "csv",
            Kind::Text { .. } => "text",
        }
    }
}

/// A checked data block and what the runs need to know about it.
pub struct Checked {
    pub spec: DataSpec,
    pub kind: Kind,
}

pub(super) const KEYS: &[&str] = &["train", "test", "split", "normalize"];

pub fn check(d: &Data, diags: &mut Vec<Diag>) -> Option<Checked> {
    let before = diags.len();
    let s = Settings::new(&d.settings, KEYS, "a data block", diags);
    let train = match s.get("train") {
        Some(e) => source(e, diags),
        None => {
            diags.push(
                Diag::new("nnc::data", format!("data `{}` has no `train` source", d.name.name), d.name.span, "no `train:`")
                    .help("add e.g. `train: idx(\"train-images-idx3-ubyte.gz\", \"train-labels-idx1-ubyte.gz\")`"),
            );
            None
        }
    };
    let test = s
        .get("test")
        .and_then(|e| source(e, diags).map(|src| (src, e.span)));
    if let (Some((tr, _)), Some(((te, tk), span))) = (&train, &test) {
        if std::mem::discriminant(tr) != std::mem::discriminant(te) {
            diags.push(
                Diag::new(
                    "nnc::data",
                    format!(
                        "the test source is {}, the train source {}",
                        tk.describe(),
                        kind_of(tr).describe()
                    ),
                    *span,
                    "a different kind of source",
                )
                .help("train and test sources must give samples of the same kind"),
            );
        }
    }
    let split = match (s.setting("split"), &test) {
        (Some(st), Some(_)) => {
            diags.push(
                Diag::new(
                    "nnc::data",
                    "`split` is only used without a `test` source",
                    st.span,
                    "ignored: there is a test source",
                )
                .help("remove `split`, or remove `test` to hold out part of `train`"),
            );
            1.0
        }
        (Some(st), None) => match consts::number(&st.value) {
            Ok(v) if v > 0.0 && v < 1.0 => v,
            Ok(v) => {
                diags.push(
                    Diag::new(
                        "nnc::data",
                        format!("split must be between 0 and 1, found {v}"),
                        st.value.span,
                        "the fraction kept for training",
                    )
                    .help("e.g. `split: 0.9` trains on 90% and tests on the other 10%"),
                );
                1.0
            }
            Err(e) => {
                diags.push(e);
                1.0
            }
        },
        (None, Some(_)) => 1.0,
        // As Keras' `validation_split` and PyTorch: nothing is held out unless asked.
        (None, None) => 1.0,
    };
    let normalize = s.get("normalize").and_then(|e| match scalar_expr(e) {
        Ok(x) => Some((x, e.span)),
        Err(d) => {
            diags.push(d);
            None
        }
    });
    if let (Some(e), Some((src, _))) = (s.get("normalize"), &train) {
        if matches!(kind_of(src), Kind::Text { .. }) {
            diags.push(
                Diag::new(
                    "nnc::data",
                    "text data has nothing to normalize",
                    e.span,
                    "text samples are character ids",
                )
                .help("remove `normalize`"),
            );
        }
    }
    let (train, kind) = train?;
    if diags.len() > before {
        return None;
    }
    let spec = DataSpec {
        name: d.name.name.clone(),
        train,
        train_span: s.get("train").map(|e| e.span).unwrap_or(d.span),
        test: test.map(|((src, _), span)| (src, span)),
        split,
        normalize,
        span: d.span,
    };
    Some(Checked { spec, kind })
}

fn kind_of(s: &Source) -> Kind {
    match s {
        Source::Inline { x, y } => inline_kind(x, y),
        Source::Idx { .. } => Kind::Idx,
        Source::Csv { .. } => Kind::Csv,
        Source::Text { seq, .. } => Kind::Text { seq: *seq },
    }
}

fn inline_kind(x: &[Vec<f64>], y: &[Vec<f64>]) -> Kind {
    let y_width = y.first().map_or(0, Vec::len);
    let y_ids = ids(y);
    Kind::Inline {
        x_width: x.first().map_or(0, Vec::len),
        y_width,
        classes: y_ids.filter(|_| y_width == 1),
        x_ids: ids(x),
        y_ids,
    }
}

/// The largest value of `rows` + 1 when every value is a whole number in [0, 10⁶): how many
/// ids they can stand for.
fn ids(rows: &[Vec<f64>]) -> Option<usize> {
    let id = |v: f64| v >= 0.0 && v.fract() == 0.0 && v < 1e6;
    rows.iter().flatten().all(|&v| id(v)).then(|| {
        rows.iter()
            .flatten()
            .map(|&v| v as usize + 1)
            .max()
            .unwrap_or(1)
    })
}

pub(super) const SOURCES: &[&str] = &["idx", "inline", "csv", "text"];

/// A source call: `idx(…)`, `inline(…)`, `csv(…)`, `text(…)`.
fn source(e: &Expr, diags: &mut Vec<Diag>) -> Option<(Source, Kind)> {
    let ExprKind::Call { callee, args } = &e.kind else {
        diags.push(Diag::new("nnc::data", format!("expected a data source, found {}", consts::describe(e)), e.span, "not a source")
            .help("sources are `idx(images, labels)`, `inline(x: [...], y: [...])`, `csv(path, label: -1)`, `text(path, seq: 64)`"));
        return None;
    };
    let sig = match callee.name.as_str() {
        "idx" => Sig {
            forms: &[&["images", "labels"]],
            named: &[],
            required: &["images", "labels"],
            usage: "`idx(\"images.gz\", \"labels.gz\")`",
        },
        "inline" => Sig {
            forms: &[&[], &["x", "y"]],
            named: &[],
            required: &["x", "y"],
            usage: "`inline(x: [[0, 0], [0, 1]], y: [[0], [1]])`",
        },
        "csv" => Sig {
            forms: &[&["path"]],
            named: &["label", "header"],
            required: &["path"],
            usage: "`csv(\"file.csv\", label: -1, header: false)`",
        },
        "text" => Sig {
            forms: &[&["path"]],
            named: &["seq"],
            required: &["path"],
            usage: "`text(\"input.txt\", seq: 64)`",
        },
        other => {
            let help = match super::names::did_you_mean(other, SOURCES.iter().copied()) {
                Some(h) => h,
                None => "sources are `idx`, `inline`, `csv` and `text`".into(),
            };
            diags.push(
                Diag::new(
                    "nnc::data",
                    format!("unknown data source `{other}`"),
                    callee.span,
                    "not a source",
                )
                .help(help),
            );
            return None;
        }
    };
    let b = match bind(callee, args, e.span, &sig) {
        Ok(b) => b,
        Err(ds) => {
            diags.extend(ds);
            return None;
        }
    };
    let before = diags.len();
    fn keep<T>(r: Result<T, Diag>, diags: &mut Vec<Diag>) -> Option<T> {
        r.map_err(|d| diags.push(d)).ok()
    }
    let src = match callee.name.as_str() {
        "idx" => {
            let images = b
                .get("images")
                .and_then(|e| keep(consts::string(e, "the images file"), diags));
            let labels = b
                .get("labels")
                .and_then(|e| keep(consts::string(e, "the labels file"), diags));
            Source::Idx {
                images: images?,
                labels: labels?,
            }
        }
        "csv" => {
            let path = b
                .get("path")
                .and_then(|e| keep(consts::string(e, "the csv file"), diags));
            let label = b
                .get("label")
                .map(|e| keep(consts::integer(e, "the label column"), diags))
                .unwrap_or(Some(-1));
            let header = b
                .get("header")
                .map(|e| keep(consts::boolean(e, "header"), diags))
                .unwrap_or(Some(false));
            Source::Csv {
                path: path?,
                label_column: label?,
                header: header?,
            }
        }
        "text" => {
            let path = b
                .get("path")
                .and_then(|e| keep(consts::string(e, "the text file"), diags));
            let seq = b
                .get("seq")
                .map(|e| keep(consts::size(e, "the sequence length"), diags))
                .unwrap_or(Some(64));
            Source::Text {
                path: path?,
                seq: seq?,
            }
        }
        _ => {
            let x = b.get("x").and_then(|e| keep(rows(e, "x"), diags));
            let y = b.get("y").and_then(|e| keep(rows(e, "y"), diags));
            let (x, y) = (x?, y?);
            if x.len() != y.len() {
                let rows = |n: usize, of: &str| match n {
                    1 => format!("1 row of {of}"),
                    n => format!("{n} rows of {of}"),
                };
                // `x: [0, 0, 0, 1]` for two samples of two inputs: each number was a row.
                let flat = b.get("x").is_some_and(|e| match &e.kind {
                    ExprKind::List(items) => items
                        .iter()
                        .all(|i| matches!(i.kind, ExprKind::Number { .. })),
                    _ => false,
                });
                let per = x.len() / y.len().max(1);
                let help = if flat && per > 1 && x.len() == per * y.len() {
                    let first: Vec<String> = x[..per].iter().map(|r| r[0].to_string()).collect();
                    format!(
                        "x is one flat list, so each number is a sample: write each sample's {per} \
                         inputs as a row of its own, `x: [[{}], ...]`",
                        first.join(", ")
                    )
                } else {
                    "every sample needs an input row and a target row".to_string()
                };
                diags.push(
                    Diag::new(
                        "nnc::data",
                        format!(
                            "inline data has {} but {}",
                            rows(x.len(), "x"),
                            rows(y.len(), "y")
                        ),
                        e.span,
                        "x and y differ in length",
                    )
                    .help(help),
                );
            }
            Source::Inline { x, y }
        }
    };
    if diags.len() > before {
        return None;
    }
    let kind = kind_of(&src);
    Some((src, kind))
}

/// The numbers of `e`, a number or a list of them nested to any depth (an image's channels of
/// rows, as `torch.tensor` takes them), appended to `out` in row-major order. Nested lists must
/// be rectangular: the lists side by side in one list have one shape.
fn flatten(e: &Expr, what: &str, out: &mut Vec<f64>) -> Result<Vec<usize>, Diag> {
    let ExprKind::List(items) = &e.kind else {
        out.push(consts::number(e)?);
        return Ok(Vec::new());
    };
    let mut shape = None;
    for it in items {
        let inner = flatten(it, what, out)?;
        match &shape {
            None => shape = Some(inner),
            Some(first) if *first != inner => {
                let show = |s: &[usize]| match s {
                    [] => "a number".to_string(),
                    s => format!("a list of shape {s:?}"),
                };
                return Err(Diag::new(
                    "nnc::data",
                    format!("a row of `{what}` is not rectangular"),
                    it.span,
                    format!("{}, after {}", show(&inner), show(first)),
                )
                .help("the lists side by side in a row must have one shape"));
            }
            Some(_) => {}
        }
    }
    let mut shape_out = vec![items.len()];
    shape_out.extend(shape.unwrap_or_default());
    Ok(shape_out)
}

/// `[[0, 0], [0, 1]]` (rows of numbers, each possibly nested: `[[[0, 1], [1, 0]]]`, flattened
/// row-major) or `[0, 1, 1, 0]` (one number per row), all rows equally wide.
fn rows(e: &Expr, what: &str) -> Result<Vec<Vec<f64>>, Diag> {
    let ExprKind::List(items) = &e.kind else {
        return Err(Diag::new(
            "nnc::data",
            format!(
                "`{what}` must be a list of rows, found {}",
                consts::describe(e)
            ),
            e.span,
            "expected [[...], ...]",
        ));
    };
    if items.is_empty() {
        return Err(Diag::new(
            "nnc::data",
            format!("`{what}` has no rows"),
            e.span,
            "empty",
        )
        .help("inline data needs at least one sample"));
    }
    let mut out = Vec::new();
    for it in items {
        let mut row = Vec::new();
        flatten(it, what, &mut row)?;
        if row.is_empty() {
            return Err(Diag::new(
                "nnc::data",
                format!("an empty row in `{what}`"),
                it.span,
                "empty row",
            ));
        }
        if let Some(first) = out.first().map(Vec::len).filter(|w| *w != row.len()) {
            return Err(Diag::new(
                "nnc::data",
                format!(
                    "rows of `{what}` differ in width: {first} and {}",
                    row.len()
                ),
                it.span,
                format!(
                    "{}; the first row has {first}",
                    super::names::plural(row.len(), "value")
                ),
            )
            .help(format!(
                "every row of `{what}` holds one sample: they need the same number of values"
            )));
        }
        out.push(row);
    }
    Ok(out)
}

fn mentions_x(e: &ScalarExpr) -> bool {
    match e {
        ScalarExpr::X => true,
        ScalarExpr::Num(_) => false,
        ScalarExpr::Neg(a) => mentions_x(a),
        ScalarExpr::Bin(_, a, b) => mentions_x(a) || mentions_x(b),
    }
}

/// `normalize:`: arithmetic on `x` and numbers.
fn scalar_expr(e: &Expr) -> Result<ScalarExpr, Diag> {
    Ok(match &e.kind {
        ExprKind::Number { value, .. } => ScalarExpr::Num(*value),
        ExprKind::Path(p) if p.len() == 1 && p[0].name == "x" => ScalarExpr::X,
        ExprKind::Neg(a) => ScalarExpr::Neg(Box::new(scalar_expr(a)?)),
        ExprKind::Binary { op, lhs, rhs } => {
            let (a, b) = (scalar_expr(lhs)?, scalar_expr(rhs)?);
            if *op == BinOp::Div && !mentions_x(&b) && b.eval(0.0) == 0.0 {
                return Err(Diag::new(
                    "nnc::data",
                    "normalize divides by zero",
                    rhs.span,
                    "this is 0",
                )
                .help("e.g. `normalize: x / 255` scales bytes to [0, 1]"));
            }
            ScalarExpr::Bin(*op, Box::new(a), Box::new(b))
        }
        ExprKind::Path(p) => {
            return Err(Diag::new(
                "nnc::data",
                format!(
                    "normalize can only use `x`, found `{}`",
                    consts::join_path(p)
                ),
                e.span,
                "unknown here",
            )
            .help("`x` is each raw input value, e.g. `normalize: (x / 255 - 0.5) / 0.5`"))
        }
        _ => {
            return Err(Diag::new(
                "nnc::data",
                format!(
                    "normalize is arithmetic on `x`, found {}",
                    consts::describe(e)
                ),
                e.span,
                "not allowed in normalize",
            )
            .help("use numbers, `x`, `+ - * /` and parentheses, e.g. `normalize: x / 255`"))
        }
    })
}
