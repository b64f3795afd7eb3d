//! Does a data source fit a model and a loss? The model's input against the samples, the type of
//! `label`, and the vocabulary against the classes predicted.

use super::data::{Checked, Kind};
use super::models::Signature;
use super::names::{plural, show};
use crate::diag::Diag;
use crate::ir::{DType, Graph, Type, ValueId};
use crate::syntax::ast::{Expr, Train};

/// Does the data give what the model takes?
pub(super) fn input_fits(sig: &Signature, kind: &Kind, t: &Train) -> Result<(), Diag> {
    let inp = &sig.input;
    let (want, ok) = match kind {
        Kind::Text { seq } => (
            format!("i32[{seq}]"),
            inp.dtype == DType::I32 && inp.dims == [*seq],
        ),
        Kind::Inline { x_width, x_ids, .. } => (
            match x_ids {
                None if inp.dtype == DType::I32 => {
                    format!("[{x_width}] values that are not all whole numbers ≥ 0")
                }
                _ => format!("[{x_width}]"),
            },
            inp.per_sample() == *x_width && (inp.dtype == DType::F32 || x_ids.is_some()),
        ),
        Kind::Idx | Kind::Csv => ("f32 values".to_string(), inp.dtype == DType::F32),
    };
    if ok {
        return inline_ids_fit(sig, kind, t);
    }
    let help = match kind {
        Kind::Text { seq } if inp.dtype == DType::I32 => format!(
            "set `seq: {}` in the text source, or declare the input as `i32[{seq}]`",
            inp.per_sample()
        ),
        Kind::Text { seq } => format!(
            "text samples are character ids: declare the input as `i32[{seq}]` and embed them"
        ),
        Kind::Inline { x_ids: None, .. } if inp.dtype == DType::I32 => {
            "a model that takes token ids reads whole numbers ≥ 0 in the rows of `x`".to_string()
        }
        Kind::Inline { x_width, .. } if inp.dtype == DType::I32 => {
            format!("each row of `x` has {x_width} ids; declare the input as `i32[{x_width}]`")
        }
        Kind::Inline { x_width, .. } => {
            format!("each row of `x` has {x_width} values; declare the input as `[{x_width}]`")
        }
        _ => "images and csv features are f32 values; declare the input as `[dims]`".to_string(),
    };
    Err(Diag::new(
        "nnc::data",
        format!(
            "model `{}` takes {}, but data `{}` gives {want}",
            t.model.name,
            show(inp),
            t.data.name
        ),
        t.data.span,
        format!("{} data", kind.describe()),
    )
    .help(help))
}

/// A model of token ids reads them as written: `normalize` would make other ids (or fractions)
/// of them.
pub(super) fn normalize_fits(sig: &Signature, data: &Checked, t: &Train) -> Result<(), Diag> {
    match &data.spec.normalize {
        Some((_, span)) if sig.input.dtype == DType::I32 => Err(Diag::new(
            "nnc::data",
            format!(
                "model `{}` takes token ids, which are not normalized",
                t.model.name
            ),
            *span,
            "would change the ids",
        )
        .also(t.data.span, "feeds the ids")
        .help("remove `normalize`")),
        _ => Ok(()),
    }
}

/// Inline token ids read by a model's `embedding` or `one_hot` must be below its vocabulary.
fn inline_ids_fit(sig: &Signature, kind: &Kind, t: &Train) -> Result<(), Diag> {
    let (Kind::Inline { x_ids: Some(n), .. }, Some((v, span))) = (kind, sig.vocab) else {
        return Ok(());
    };
    if sig.input.dtype != DType::I32 || *n <= v {
        return Ok(());
    }
    Err(Diag::new(
        "nnc::data",
        format!(
            "the inputs of `{}` go up to id {}, but model `{}` reads a vocabulary of {v}",
            t.data.name,
            n - 1,
            t.model.name
        ),
        t.data.span,
        format!("ids up to {}", n - 1),
    )
    .also(span, format!("vocabulary of {v}"))
    .help(format!("the vocabulary must be at least {n}")))
}

/// The length T of a sequence output `[T, classes]`, whose labels are T class ids a sample.
fn sequence_length(output: Option<&Type>) -> Option<usize> {
    output.and_then(|o| (o.dims.len() == 2).then(|| o.dims[0]))
}

/// The type of `label` in the run's graphs, from the data and how the loss uses it (and, for
/// inline ids, the model's `output`: a sequence of T positions takes T class ids a sample).
pub(super) fn label_type(
    kind: &Kind,
    class_use: bool,
    t: &Train,
    loss: &Expr,
    output: Option<&Type>,
) -> Result<Type, Diag> {
    Ok(match kind {
        Kind::Text { seq } if class_use => {
            text_output_fits(*seq, t, loss, output)?;
            Type::i32(true, vec![*seq])
        }
        Kind::Text { seq } => Type::i32(true, vec![*seq]),
        Kind::Idx => Type::i32(true, vec![]),
        Kind::Csv if class_use => Type::i32(true, vec![]),
        Kind::Csv => Type::f32(true, vec![1]),
        Kind::Inline {
            classes: Some(_), ..
        } if class_use => Type::i32(true, vec![]),
        Kind::Inline {
            y_width,
            y_ids: Some(_),
            ..
        } if class_use && sequence_length(output) == Some(*y_width) => {
            Type::i32(true, vec![*y_width])
        }
        Kind::Inline { y_width, .. } if class_use && *y_width == 1 => {
            return Err(Diag::new("nnc::data", format!("cross_entropy needs class ids, but the targets of `{}` are not whole numbers ≥ 0", t.data.name), loss.span, "uses `label` as class ids")
                .also(t.data.span, "the data")
                .help("write class ids 0, 1, 2, … in `y`, or use `mse` for real-valued targets"));
        }
        Kind::Inline { y_width, .. } => Type::f32(true, vec![*y_width]),
    })
}

/// A text source labels every position of a window of `seq` with the next character, so a model
/// learning them as class ids predicts one character a position: `[seq, classes]`. A model that
/// reads the window and predicts once (`|> flatten |> dense(65)`, many-to-one) would otherwise get
/// cross_entropy's shape error, which does not say where the `seq` labels come from.
fn text_output_fits(seq: usize, t: &Train, loss: &Expr, output: Option<&Type>) -> Result<(), Diag> {
    let Some(out) = output.filter(|o| sequence_length(Some(o)) != Some(seq)) else {
        return Ok(());
    };
    let classes = out.last();
    Err(Diag::new(
        "nnc::data",
        format!(
            "a text source labels each of the {seq} positions with the next character, but model `{}` predicts {}",
            t.model.name,
            show(out)
        ),
        t.model.span,
        format!("outputs {} a sample", show(out)),
    )
    .also(t.data.span, format!("labels i32[{seq}]: the next character at each position"))
    .also(loss.span, "uses `label` as class ids")
    .help(format!(
        "the output must be [{seq}, {classes}], one prediction per position: apply the last \
         `dense({classes})` to the [{seq}, hidden] output of the rnn (gru, lstm) as it is, \
         without `flatten` (`|> rnn(128) |> dense({classes})`)"
    )))
}

/// "1 class" / "10 classes" (a model may well have one output: a sigmoid's probability).
fn classes_word(n: usize) -> String {
    if n == 1 {
        "1 class".into()
    } else {
        format!("{n} classes")
    }
}

/// With text data and class labels, the model's vocabulary must be the number of classes it
/// predicts; inline class ids must be below that number.
pub(super) fn check_vocab(
    sig: &Signature,
    kind: &Kind,
    g: &Graph,
    out: ValueId,
    class_use: bool,
    t: &Train,
    diags: &mut Vec<Diag>,
) {
    let classes = g.ty(out).last();
    // The class ids of inline labels: one a sample, or one a position of a sequence output.
    let inline_labels = match kind {
        Kind::Inline {
            classes: Some(n), ..
        } => Some(*n),
        Kind::Inline {
            y_ids: Some(n),
            y_width,
            ..
        } if sequence_length(Some(g.ty(out))) == Some(*y_width) => Some(*n),
        _ => None,
    };
    match (kind, sig.vocab) {
        (Kind::Text { .. }, Some((v, span))) if class_use && v != classes => diags.push(
            Diag::new("nnc::shape", format!("model `{}` reads {} but predicts {}", t.model.name, plural(v, "different token"), classes_word(classes)), span, format!("vocabulary of {v}"))
                .also(t.model.span, format!("predicts {}", classes_word(classes)))
                .help(format!("the labels are the next characters: the vocabulary and the last layer's outputs must both be the number of different characters in the text (known when it is read), e.g. `dense({v})` if it has {v}")),
        ),
        (Kind::Inline { .. }, _) if class_use => {
            if let Some(n) = inline_labels.filter(|&n| n > classes) {
                diags.push(
                    Diag::new("nnc::data", format!("the labels of `{}` go up to {}, but model `{}` predicts {}", t.data.name, n - 1, t.model.name, classes_word(classes)), t.data.span, format!("{n} classes"))
                        .help(format!("the last layer needs at least {n} outputs")),
                );
            }
        }
        _ => {}
    }
}
