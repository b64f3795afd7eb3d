//! `nnc sample`: text generation with a character model. The prompt is encoded with the training
//! text's vocabulary; each new character is drawn from softmax(logits / temperature) at the last
//! position of the context window, with the seeded PRNG, and appended to the context.

use super::rng::Rng;
use crate::exec::{ExecError, Executor, Feed, StepCtx};
use crate::ir::{DType, Graph, Op};

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("the prompt's character {0:?} is not in the training text's vocabulary")]
    UnknownChar(char),
    #[error("the model must take one i32[T] input of character ids and output [T, {vocab}] logits, one for each different character of the training text: {msg}")]
    Model { vocab: usize, msg: String },
    #[error("temperature must be ≥ 0 (0: the likeliest character each time), got {0}")]
    Temperature(f32),
    #[error("running the model: {0}")]
    Exec(#[from] ExecError),
    #[error(
        "the model's output for character {at} is {value} for character id {id}: nothing can be \
         drawn from values that are not finite (the parameters overflow on this text)"
    )]
    NotFinite { at: usize, id: usize, value: f32 },
    #[error("writing the text: {0}")]
    Write(#[from] std::io::Error),
}

/// The layer (its path, as the graph labels it) whose reverse direction makes the model read a
/// sequence from its end: a bidirectional `rnn`, `gru` or `lstm`, lowered with a reversal of the
/// time axis (axis 1 of `[B, T, features]`). Its output at a position depends on the characters
/// after it, which do not exist yet when text is generated one character at a time.
pub fn reads_ahead(graph: &Graph) -> Option<&str> {
    graph
        .nodes
        .iter()
        .find(|n| n.op == Op::Reverse { axis: 1 })
        .map(|n| n.label.as_str())
}

#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    pub prompt: String,
    /// Characters to generate after the prompt.
    pub length: usize,
    pub temperature: f32,
    pub seed: u64,
}

/// Draws an index from softmax(logits / temperature); at temperature 0, the first largest logit
/// (greedy decoding).
pub fn draw(logits: &[f32], temperature: f32, rng: &mut Rng) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if temperature == 0.0 {
        return logits.iter().position(|&l| l == max).unwrap_or(0);
    }
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let mut u = rng.next_f64() * w.iter().sum::<f64>();
    for (i, wi) in w.iter().enumerate() {
        if u < *wi {
            return i;
        }
        u -= wi;
    }
    w.len() - 1
}

/// The prompt followed by `length` generated characters. The model (`exec` runs its inference
/// graph) sees the last `T` characters; a shorter context is padded after its end, which a causal
/// model ignores at the positions read. `params` as [`Executor::run`] takes them (none when
/// `exec` holds them, [`Executor::hold_params`]).
pub fn sample(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    vocab: &[char],
    opts: &SampleOptions,
) -> Result<String, SampleError> {
    let mut text = String::new();
    let mut push = |c| {
        text.push(c);
        Ok(())
    };
    generate(exec, params, vocab, opts, &mut push)?;
    Ok(text)
}

/// [`sample`], handing each character to `emit` as soon as it is known (the prompt's once it is
/// encoded, then each drawn one): `nnc sample` prints the text as it grows, and holds only the
/// context window, however long the text. An error of `emit` ends the generation.
pub fn generate(
    exec: &mut dyn Executor,
    params: &[&[f32]],
    vocab: &[char],
    opts: &SampleOptions,
    emit: &mut dyn FnMut(char) -> std::io::Result<()>,
) -> Result<(), SampleError> {
    if opts.temperature.is_nan() || opts.temperature < 0.0 {
        return Err(SampleError::Temperature(opts.temperature));
    }
    let model = |msg: &str| SampleError::Model {
        vocab: vocab.len(),
        msg: msg.into(),
    };
    let g = exec.graph();
    let inputs = g.inputs();
    let [(input, _)] = inputs[..] else {
        return Err(model("not exactly one input"));
    };
    let ty = g.ty(input);
    if ty.dtype != DType::I32 || ty.dims.len() != 1 {
        return Err(model(&format!("the input is {ty}")));
    }
    let window = ty.dims[0];
    let out = g
        .output("output")
        .ok_or_else(|| model("no output `output`"))?;
    let oty = g.ty(out);
    if oty.dims != [window, vocab.len()] {
        return Err(model(&format!("the output is {oty}")));
    }
    let mut ids: Vec<i32> = opts
        .prompt
        .chars()
        .map(|c| {
            vocab
                .binary_search(&c)
                .map(|i| i as i32)
                .map_err(|_| SampleError::UnknownChar(c))
        })
        .collect::<Result<_, _>>()?;
    for c in opts.prompt.chars() {
        emit(c)?;
    }
    // The position in the text of the first character drawn.
    let start = ids.len();
    if ids.is_empty() {
        // No prompt: start from a newline when the text has one, else from the first character.
        ids.push(vocab.binary_search(&'\n').unwrap_or(0) as i32);
    }
    let mut rng = Rng::for_name(opts.seed, "sample");
    let mut feed = vec![0i32; window];
    for at in (start..).take(opts.length) {
        if ids.len() >= 2 * window {
            ids.drain(..ids.len() - window);
        }
        let ctx = &ids[ids.len().saturating_sub(window)..];
        feed[..ctx.len()].copy_from_slice(ctx);
        feed[ctx.len()..].fill(0);
        exec.run(
            1,
            &[Feed::I32(&feed)],
            params,
            StepCtx {
                seed: opts.seed,
                ..StepCtx::default()
            },
        )?;
        let o = exec
            .output("output")
            .ok_or_else(|| model("no output after running"))?;
        let pos = ctx.len() - 1;
        let row = &o[pos * vocab.len()..(pos + 1) * vocab.len()];
        if let Some(id) = super::predict::unusable_logit(row) {
            return Err(SampleError::NotFinite {
                at,
                id,
                value: row[id],
            });
        }
        let next = draw(row, opts.temperature, &mut rng);
        ids.push(next as i32);
        emit(vocab[next])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_follows_the_softmax_and_low_temperature_is_greedy() {
        let mut rng = Rng::new(1);
        let logits = [0.0, (3.0f32).ln()];
        let n = 40_000;
        let ones = (0..n).filter(|_| draw(&logits, 1.0, &mut rng) == 1).count();
        assert!((ones as f64 / n as f64 - 0.75).abs() < 0.01, "{ones}");
        assert!((0..100).all(|_| draw(&[0.1, 0.3, 0.2], 1e-3, &mut rng) == 1));
    }
}
