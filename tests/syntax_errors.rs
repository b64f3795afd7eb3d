//! What a person sees for typical syntax mistakes: the full miette rendering (message, labels,
//! related spans, help) of each, in one snapshot. `tests/parse.rs` asserts the pieces; this shows
//! them together, so that a change in wording or placement is reviewed as a whole.

use nnc::diag::Report;

const CASES: &[(&str, &str)] = &[
    (
        "unclosed call",
        "model Net(x: [784]) {\n    return x |> dense(128 |> relu\n}\n",
    ),
    (
        "extra closer",
        "model Net(x: [784]) {\n    h = x |> dense(128)) |> relu\n    return h\n}\n",
    ),
    (
        "missing brace at end of file",
        "model Net(x: [784]) {\n    return x |> dense(10)\n",
    ),
    (
        "equals in a setting",
        "train Net on mnist {\n    batch = 64\n}\n",
    ),
    (
        "colon in a model",
        "model Net(x: [784]) {\n    h: x |> relu\n    return h\n}\n",
    ),
    (
        "missing return",
        "model Net(x: [784]) {\n    x |> dense(10)\n}\n",
    ),
    (
        "statement after return",
        "model Net(x: [784]) {\n    return x\n    y = x\n}\n",
    ),
    (
        "equals in a named argument",
        "model Net(x: [1, 28, 28]) {\n    return x |> conv2d(8, kernel=3)\n}\n",
    ),
    (
        "keyword as a name",
        "model Net(data: [784]) {\n    return data\n}\n",
    ),
    ("missing on", "train Net mnist {\n    batch: 64\n}\n"),
    (
        "missing comma",
        "train Net on mnist {\n    eval: every 1 epoch [loss accuracy]\n}\n",
    ),
    (
        "misplaced quote",
        "data mnist {\n    train: idx(\"train.gz, \"labels.gz\")\n}\n",
    ),
    (
        "unterminated string",
        "data mnist {\n    train: idx(\"train.gz\", \"labels.gz)\n}\n",
    ),
    (
        "arithmetic after a stage",
        "model Net(x: [784]) {\n    return x |> relu * 2\n}\n",
    ),
    (
        "semicolon",
        "model Net(x: [784]) {\n    h = x |> relu;\n    return h\n}\n",
    ),
    (
        "a module's function called",
        "model Net(x: [784]) {\n    h = F.relu(x |> dense(128))\n    return h\n}\n",
    ),
    (
        "indexing",
        "model Net(t: i32[8]) {\n    h = t |> embedding(65, 16) |> rnn(32)\n    return h[-1]\n}\n",
    ),
    (
        "two results",
        "model Net(x: [784]) {\n    h = x |> dense(10)\n    return h, x\n}\n",
    ),
    (
        "a trailing comma, then a result without return",
        "model Net(x: [784]) {\n    h = x |> dense(10),\n    h |> relu\n}\n",
    ),
    (
        "two broken items",
        "model A(x: [2]) {\n    return x |> dense(1\n}\n\ntrain A on d {\n    batch = 4\n}\n",
    ),
];

#[test]
fn typical_syntax_errors_render_clearly() {
    let mut out = String::new();
    for (name, src) in CASES {
        let diags = nnc::syntax::parse(src).expect_err(name);
        out.push_str(&format!("===== {name}\n"));
        out.push_str(&Report::new("net.nn", src, diags).render(false));
    }
    insta::assert_snapshot!(out);
}
