//! Names that PyTorch and Keras give what nnc calls otherwise, or lacks, and their module calls
//! (`nn.Linear(784, 128)`, `F.relu(x)`, `layers.Dense(10)`), which a model written from one of
//! them brings along: the parser reports a dotted call with nnc's name for the layer, and the
//! checker an unknown layer named as PyTorch or Keras name it.

use super::ast::Span;
use super::lex::{Kind, Tok};
use crate::diag::Diag;

/// What nnc calls the layer, activation or pooling that PyTorch or Keras name `name`, or what
/// it lacks; `None` for a name neither uses differently.
pub fn nnc_name_for(name: &str) -> Option<&'static str> {
    Some(match name {
        "Linear" | "linear" | "fc" | "Dense" => {
            "a fully connected layer is `dense(out)` or `dense(in, out)` (PyTorch's \
             `nn.Linear(in, out)`, Keras' `Dense(out)`)"
        }
        "Conv2d" | "Conv2D" | "conv2d" => {
            "a convolution is `conv2d(out, kernel: k)` or `conv2d(in, out, kernel: k, stride: s, \
             padding: p)` (PyTorch's `nn.Conv2d(in, out, k)`)"
        }
        "ConvTranspose2d" | "Conv2DTranspose" | "Conv2dTranspose" | "conv2d_transpose"
        | "deconv2d" | "Deconv2d" | "deconv" | "Deconvolution2D" => {
            "a transposed convolution is `conv_transpose2d(out, kernel: k, stride: s, padding: \
             p, output_padding: q)` (PyTorch's `nn.ConvTranspose2d(in, out, k, s, p, q)`, Keras' \
             `Conv2DTranspose(out, k, strides=s)`)"
        }
        "Upsample"
        | "UpSampling2D"
        | "upsampling2d"
        | "UpsamplingNearest2d"
        | "UpsamplingBilinear2d"
        | "interpolate"
        | "upsample2d" => {
            "nearest-neighbour upsampling is `upsample(s)`: [C, H, W] -> [C, s·H, s·W] \
             (PyTorch's `nn.Upsample(scale_factor=s)`, Keras' `UpSampling2D(size=s)`)"
        }
        // Without this, `conv1d` was answered "did you mean `conv2d`?", as if misspelt.
        "Conv1d" | "Conv1D" | "conv1d" | "Conv3d" | "Conv3D" | "conv3d" => {
            "nnc has no 1-D or 3-D convolution: `conv2d(out, kernel: k)` convolves [C, H, W] \
             images with square k×k kernels"
        }
        "BatchNorm1d" | "BatchNorm2d" | "BatchNormalization" | "batchnorm" | "bn" => {
            "batch normalization is `batch_norm` or `batch_norm(C)` (momentum: 0.1, eps: 1e-5): \
             PyTorch's `nn.BatchNorm1d(C)` on [C] vectors and `nn.BatchNorm2d(C)` on [C, H, W] \
             images; Keras's `BatchNormalization(momentum=0.99)` is `batch_norm(momentum: 0.01)`"
        }
        "LayerNorm" | "LayerNormalization" => {
            "layer normalization over the last axis is `layer_norm` (Keras' \
             `LayerNormalization()`, PyTorch's `nn.LayerNorm(d)`)"
        }
        "LSTM" => {
            "an LSTM is `lstm(hidden)`: PyTorch's `nn.LSTM(in, hidden, batch_first=True)` \
             (`num_layers: 2, dropout: 0.1` for its `num_layers=2, dropout=0.1`), Keras' \
             `LSTM(hidden, return_sequences=True)`"
        }
        "GRU" => {
            "a GRU is `gru(hidden)`: PyTorch's `nn.GRU(in, hidden, batch_first=True)`, Keras' \
             `GRU(hidden, return_sequences=True, reset_after=True)`"
        }
        "Bidirectional" => {
            "a bidirectional layer is an argument of the recurrent layer: \
             `lstm(hidden, bidirectional: true)` (and `gru`, `rnn`), as PyTorch's \
             `bidirectional=True`; its output is [T, 2·hidden]"
        }
        "LSTMCell" | "GRUCell" | "RNNCell" | "SimpleRNNCell" => {
            "nnc has no single-step cells: `lstm(hidden)`, `gru(hidden)` and `rnn(hidden)` run the \
             whole sequence, [T, features] -> [T, hidden]"
        }
        "RNN" | "SimpleRNN" => {
            "nnc's recurrent layer is `rnn(hidden, activation: tanh)`: PyTorch's \
             `nn.RNN(in, hidden, batch_first=True)`, Keras' `SimpleRNN` with \
             `return_sequences=True`"
        }
        "Sequential" | "Module" | "Model" => {
            "a model is a `model` block, its layers chained with `|>`: `model Net(x: [784]) -> \
             [10] { return x |> dense(128) |> relu |> dense(10) }`"
        }
        "Embedding" => "an embedding is `embedding(vocab, dim)` (PyTorch's `nn.Embedding`)",
        "Dropout" => "dropout is `dropout(p)`",
        "Flatten" => "flattening is `flatten`",
        "ReLU" | "Sigmoid" | "Tanh" | "Softmax" | "LogSoftmax" | "relu" | "sigmoid" | "tanh"
        | "softmax" | "log_softmax" => {
            "the activations are `relu`, `sigmoid`, `tanh`, `softmax`, `log_softmax`, \
             `leaky_relu`, `elu`, `gelu`, `silu` and `softplus`, applied with `|>`: \
             `x |> dense(128) |> relu`"
        }
        "LeakyReLU" | "LeakyRelu" | "leakyrelu" | "lrelu" | "leaky_relu" => {
            "leaky ReLU is `leaky_relu` or `leaky_relu(negative_slope: 0.01)` (PyTorch's \
             `nn.LeakyReLU(negative_slope)`, Keras' `LeakyReLU(negative_slope)`, once `alpha`)"
        }
        "ELU" | "elu" => "ELU is `elu` or `elu(alpha: 1.0)` (PyTorch's `nn.ELU(alpha)`)",
        "GELU" | "gelu" => {
            "GELU is `gelu`, or `gelu(approximate: \"tanh\")` for its tanh form (PyTorch's \
             `nn.GELU(approximate=…)`)"
        }
        "SiLU" | "Swish" | "swish" | "silu" => {
            "x·sigmoid(x) is `silu` (PyTorch's `nn.SiLU`, Keras' and TensorFlow's `swish`)"
        }
        "Softplus" | "softplus" => {
            "softplus is `softplus` or `softplus(beta: 1, threshold: 20)` (PyTorch's \
             `nn.Softplus(beta, threshold)`)"
        }
        "MaxPool2d" | "MaxPooling2D" | "max_pool2d" | "max_pool" => {
            "max pooling is `maxpool(k)` or `maxpool(k, stride: s)`"
        }
        "AvgPool2d" | "AveragePooling2D" | "avg_pool2d" | "avg_pool" => {
            "average pooling is `avgpool(k)` or `avgpool(k, stride: s)`"
        }
        "AdaptiveAvgPool2d" | "GlobalAveragePooling2D" | "adaptive_avg_pool2d" => {
            "the mean of each channel's whole map is `global_avgpool`: [C, H, W] -> [C] \
             (PyTorch's `nn.AdaptiveAvgPool2d(1)` then `flatten`)"
        }
        "AdaptiveMaxPool2d" | "GlobalMaxPooling2D" | "adaptive_max_pool2d" => {
            "the maximum of each channel's whole map is `global_maxpool`: [C, H, W] -> [C] \
             (PyTorch's `nn.AdaptiveMaxPool2d(1)` then `flatten`)"
        }
        "CrossEntropyLoss"
        | "NLLLoss"
        | "cross_entropy"
        | "nll_loss"
        | "SparseCategoricalCrossentropy"
        | "CategoricalCrossentropy" => {
            "the classification loss is `loss: cross_entropy(output, label)`: it takes logits \
             and applies log_softmax itself"
        }
        "MSELoss" | "mse_loss" | "MeanSquaredError" => {
            "the squared error is `loss: mse(output, label)`"
        }
        "BCELoss" | "binary_cross_entropy" | "BinaryCrossentropy" => {
            "the binary loss is `loss: binary_cross_entropy(output, label)`, on probabilities \
             (after `sigmoid`)"
        }
        "SGD" | "Adam" | "AdamW" | "RMSprop" => {
            "the optimizer is a setting of the run, without the parameters: `optimizer: \
             adam(lr: 1e-3)`; the optimizers are `sgd`, `adam`, `adamw` and `rmsprop`"
        }
        _ => return None,
    })
}

/// The error for a call on a dotted name, `nn.Linear(784, 10)`, when one is open at byte `pos`
/// (`toks` being `src`'s tokens): pointing at the name, with nnc's name for the layer.
pub fn dotted_call(src: &str, toks: &[Tok], pos: usize) -> Option<Diag> {
    let open = super::hints::open_brackets(src, toks, pos)
        .into_iter()
        .rev()
        .find(|t| &src[t.span.start..t.span.end] == "(")?;
    dotted_before(src, toks, open.span.start)
}

/// The error for the first call on a dotted name on the line of byte `pos`, wherever pest
/// stumbled on that line: `self.fc = nn.Linear(784, 10)` fails at its `=`, and
/// `model = nn.Sequential(...)` at `model`'s `=`, before reaching the call.
pub fn dotted_call_on_line(src: &str, toks: &[Tok], pos: usize) -> Option<Diag> {
    let start = src[..pos.min(src.len())].rfind('\n').map_or(0, |n| n + 1);
    let end = src[start..].find('\n').map_or(src.len(), |n| start + n);
    toks.iter()
        .filter(|t| t.span.start >= start && t.span.end <= end)
        .filter(|t| &src[t.span.start..t.span.end] == "(")
        .find_map(|t| dotted_before(src, toks, t.span.start))
}

/// The error for a call on the dotted name that ends right before byte `at` (the call's `(`),
/// if there is one there.
pub fn dotted_before(src: &str, toks: &[Tok], at: usize) -> Option<Diag> {
    let text = |t: &Tok| &src[t.span.start..t.span.end];
    let i = toks.iter().position(|t| t.span.end == at)?;
    // Back over `word (. word)+`, which must end at the `(` with nothing between.
    let mut first = i;
    while first >= 2
        && text(&toks[first - 1]) == "."
        && toks[first - 1].span.end == toks[first].span.start
        && matches!(toks[first - 2].kind, Kind::Word)
    {
        first -= 2;
    }
    if first == i || !matches!(toks[i].kind, Kind::Word) {
        return None;
    }
    let span = Span::new(toks[first].span.start, toks[i].span.end);
    let path = &src[span.start..span.end];
    let name = text(&toks[i]);
    let help = match nnc_name_for(name) {
        // `F.leaky_relu(x, 0.2)`: nnc has the function itself, under the same name.
        Some(h) if crate::check::ACTIVATIONS.contains(&name) => format!(
            "{h}; as a function, `{name}(x, …)` without `{}.` takes the tensor first and its \
             arguments after it (named with `:`)",
            &path[..path.len() - name.len() - 1]
        ),
        Some(h) => h.to_string(),
        None => "apply layers and activations with `|>`, by their names alone: \
                 `x |> dense(128) |> relu`, `x |> flatten`"
            .to_string(),
    };
    Some(
        Diag::new(
            "nnc::syntax",
            format!("nnc has no module or method calls such as `{path}(...)`"),
            span,
            "a call on a dotted name",
        )
        .help(help),
    )
}
