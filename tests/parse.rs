//! The parser: every construct to the expected AST, operator precedence, spans, and the syntax
//! errors people typically make (message, span and fix).

mod common;

use nnc::diag::Diag;
use nnc::syntax::ast::*;
use nnc::syntax::{parse, print_ast};

fn ok(src: &str) -> File {
    match parse(src) {
        Ok(f) => f,
        Err(ds) => panic!(
            "{}",
            nnc::diag::Report::new("test.nn", src, ds).render(false)
        ),
    }
}

fn errs(src: &str) -> Vec<Diag> {
    match parse(src) {
        Ok(f) => panic!("expected a syntax error, got\n{}", print_ast(&f)),
        Err(ds) => {
            assert!(!ds.is_empty());
            for d in &ds {
                assert_eq!(d.code, "nnc::syntax");
            }
            ds
        }
    }
}

/// The one error of `src`, with the text its span covers.
fn err(src: &str) -> (Diag, &str) {
    let ds = errs(src);
    assert_eq!(ds.len(), 1, "{ds:?}");
    let d = ds.into_iter().next().unwrap();
    let text = &src[d.span.start..d.span.end];
    (d, text)
}

/// A compact, independent rendering of an expression's structure.
fn sx(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Path(p) => p
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ExprKind::List(items) => {
            format!("[{}]", items.iter().map(sx).collect::<Vec<_>>().join(" "))
        }
        ExprKind::Map(es) => {
            format!(
                "{{{}}}",
                es.iter()
                    .map(|(k, v)| format!("{}: {}", k.name, sx(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        ExprKind::Call { callee, args } => {
            let mut s = format!("({}", callee.name);
            for a in args {
                s.push(' ');
                if let Some(n) = &a.name {
                    s.push_str(&format!("{}=", n.name));
                }
                s.push_str(&sx(&a.value));
            }
            s + ")"
        }
        ExprKind::Pipe {
            input,
            stage,
            alias,
        } => match alias {
            Some(a) => format!("(|> {} {} as {})", sx(input), sx(stage), a.name),
            None => format!("(|> {} {})", sx(input), sx(stage)),
        },
        ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", op.symbol(), sx(lhs), sx(rhs)),
        ExprKind::Neg(x) => format!("(neg {})", sx(x)),
        ExprKind::Every {
            count,
            unit,
            metrics,
        } => {
            let ms = match metrics {
                Some(ms) => {
                    let ms: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
                    format!(" [{}]", ms.join(" "))
                }
                None => String::new(),
            };
            format!("(every {} {}{ms})", sx(count), unit.name)
        }
    }
}

/// The value of the single setting of `train M on d { key: <src> }`.
fn value(src: &str) -> Expr {
    let file = ok(&format!("train M on d {{ key: {src} }}"));
    let Item::Train(t) = &file.items[0] else {
        panic!()
    };
    assert_eq!(t.settings.len(), 1);
    t.settings[0].value.clone()
}

fn v(src: &str) -> String {
    sx(&value(src))
}

fn model(file: &File, i: usize) -> &Model {
    match &file.items[i] {
        Item::Model(m) => m,
        other => panic!("not a model: {other:?}"),
    }
}

fn text(src: &str, s: Span) -> &str {
    &src[s.start..s.end]
}

const CONVNET: &str = r#"
// A small CNN.
model ConvNet(image: [1, 28, 28]) -> [10] {
    x = image |> conv2d(32, kernel: 3, padding: 1) |> relu |> maxpool(2)
    x = x |> conv2d(64, kernel: 3, padding: 1) |> relu |> maxpool(2)   # rebinding
    return x |> flatten |> dense(64*7*7, 128) |> relu |> dense(10) as head
}

data mnist {
    train: idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    test:  idx("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    normalize: (x / 255 - 0.5) / 0.5
}

train ConvNet on mnist {
    loss: cross_entropy(output, label) + 1e-4 * l2()
    optimizer: sgd(lr: 0.01, momentum: 0.9)
    batch: 64, epochs: 1, seed: 1, eval: every 1 epoch [loss, accuracy]
}
train finetune: ConvNet on mnist { init: ConvNet, freeze: [conv1, conv2], lr_scale: { head: 0.1 } }
"#;

#[test]
fn a_whole_file_parses_to_its_items_in_order() {
    let f = ok(CONVNET);
    assert_eq!(f.items.len(), 4);
    let m = model(&f, 0);
    assert_eq!(m.name.name, "ConvNet");
    assert_eq!(m.inputs.len(), 1);
    assert_eq!(m.inputs[0].name.name, "image");
    assert!(m.inputs[0].ty.dtype.is_none());
    assert_eq!(
        m.inputs[0].ty.dims.iter().map(sx).collect::<Vec<_>>(),
        ["1", "28", "28"]
    );
    assert_eq!(
        m.output
            .as_ref()
            .unwrap()
            .dims
            .iter()
            .map(sx)
            .collect::<Vec<_>>(),
        ["10"]
    );
    assert_eq!(m.body.len(), 3);
    let Stmt::Let { name, value, .. } = &m.body[0] else {
        panic!()
    };
    assert_eq!(name.name, "x");
    assert_eq!(
        sx(value),
        "(|> (|> (|> image (conv2d 32 kernel=3 padding=1)) relu) (maxpool 2))"
    );
    let Stmt::Let { name, .. } = &m.body[1] else {
        panic!()
    };
    assert_eq!(name.name, "x");
    let Stmt::Return { value, .. } = &m.body[2] else {
        panic!()
    };
    assert_eq!(
        sx(value),
        "(|> (|> (|> (|> x flatten) (dense (* (* 64 7) 7) 128)) relu) (dense 10) as head)"
    );

    let Item::Data(d) = &f.items[1] else { panic!() };
    assert_eq!(d.name.name, "mnist");
    let keys: Vec<&str> = d.settings.iter().map(|s| s.key.name.as_str()).collect();
    assert_eq!(keys, ["train", "test", "normalize"]);
    assert_eq!(
        sx(&d.settings[0].value),
        r#"(idx "train-images-idx3-ubyte.gz" "train-labels-idx1-ubyte.gz")"#
    );
    assert_eq!(sx(&d.settings[2].value), "(/ (- (/ x 255) 0.5) 0.5)");

    let Item::Train(t) = &f.items[2] else {
        panic!()
    };
    assert!(t.name.is_none());
    assert_eq!(
        (t.model.name.as_str(), t.data.name.as_str()),
        ("ConvNet", "mnist")
    );
    let keys: Vec<&str> = t.settings.iter().map(|s| s.key.name.as_str()).collect();
    assert_eq!(
        keys,
        ["loss", "optimizer", "batch", "epochs", "seed", "eval"]
    );
    assert_eq!(
        sx(&t.settings[0].value),
        "(+ (cross_entropy output label) (* 1e-4 (l2)))"
    );
    assert_eq!(sx(&t.settings[1].value), "(sgd lr=0.01 momentum=0.9)");
    assert_eq!(sx(&t.settings[5].value), "(every 1 epoch [loss accuracy])");

    let Item::Train(t) = &f.items[3] else {
        panic!()
    };
    assert_eq!(t.name.as_ref().unwrap().name, "finetune");
    assert_eq!(t.model.name, "ConvNet");
    let vals: Vec<String> = t.settings.iter().map(|s| sx(&s.value)).collect();
    assert_eq!(vals, ["ConvNet", "[conv1 conv2]", "{head: 0.1}"]);
}

#[test]
fn empty_files_and_comment_only_files_parse() {
    assert!(ok("").items.is_empty());
    assert!(ok("  // nothing\n# here either").items.is_empty());
    assert_eq!(
        ok("model M(x: [1]) { return x } // no newline at the end")
            .items
            .len(),
        1
    );
}

#[test]
fn input_types_take_an_optional_dtype_and_dimension_expressions() {
    let f = ok("model A(tokens: i32[64]) -> f32[64, 65] { return tokens }\nmodel B(x: [2 * 3, 4]) { return x }");
    let a = model(&f, 0);
    assert_eq!(a.inputs[0].ty.dtype.as_ref().unwrap().name, "i32");
    assert_eq!(
        a.output.as_ref().unwrap().dtype.as_ref().unwrap().name,
        "f32"
    );
    assert_eq!(a.output.as_ref().unwrap().dims.len(), 2);
    let b = model(&f, 1);
    assert!(b.output.is_none());
    assert_eq!(
        b.inputs[0].ty.dims.iter().map(sx).collect::<Vec<_>>(),
        ["(* 2 3)", "4"]
    );
    // Several inputs parse (the checker refuses them); so does a trailing comma.
    let f = ok("model C(a: [1], b: [2],) { return a }");
    assert_eq!(model(&f, 0).inputs.len(), 2);
}

#[test]
fn arithmetic_has_the_usual_precedence_and_associativity() {
    assert_eq!(v("a + b * c"), "(+ a (* b c))");
    assert_eq!(v("a * b + c"), "(+ (* a b) c)");
    assert_eq!(v("a - b - c"), "(- (- a b) c)");
    assert_eq!(v("a / b / c"), "(/ (/ a b) c)");
    assert_eq!(v("a / b * c"), "(* (/ a b) c)");
    assert_eq!(v("(a + b) * c"), "(* (+ a b) c)");
    assert_eq!(v("-a * b"), "(* (neg a) b)");
    assert_eq!(v("a * -b"), "(* a (neg b))");
    assert_eq!(v("- -a"), "(neg (neg a))");
    assert_eq!(v("a - -1"), "(- a (neg 1))");
    assert_eq!(v("-(a + b)"), "(neg (+ a b))");
}

#[test]
fn pipelines_bind_loosest_and_associate_to_the_left() {
    assert_eq!(v("x |> f |> g"), "(|> (|> x f) g)");
    assert_eq!(v("a + b |> relu"), "(|> (+ a b) relu)");
    assert_eq!(v("2 * x |> dense(3)"), "(|> (* 2 x) (dense 3))");
    assert_eq!(
        v("x |> dense(10) as head |> relu"),
        "(|> (|> x (dense 10) as head) relu)"
    );
    assert_eq!(v("x |> Encoder as enc"), "(|> x Encoder as enc)");
    assert_eq!(v("(x |> relu) + 1"), "(+ (|> x relu) 1)");
    assert_eq!(v("relu(x |> dense(3))"), "(relu (|> x (dense 3)))");
    assert_eq!(v("x |> relu()"), "(|> x (relu))");
}

#[test]
fn calls_take_positional_and_named_arguments() {
    assert_eq!(
        v("conv2d(32, kernel: 3, stride: 2,)"),
        "(conv2d 32 kernel=3 stride=2)"
    );
    assert_eq!(v("l2()"), "(l2)");
    assert_eq!(v("l2(encoder.dense1)"), "(l2 encoder.dense1)");
    assert_eq!(
        v(r#"Teacher(checkpoint: "t.safetensors")"#),
        r#"(Teacher checkpoint="t.safetensors")"#
    );
    // Argument names may be keywords: `step(every: 10)`.
    assert_eq!(
        v("step(every: 10, gamma: 0.5, warmup: 100)"),
        "(step every=10 gamma=0.5 warmup=100)"
    );
    assert_eq!(
        v("kd(output, teacher, label, alpha: 0.5, temperature: 4)"),
        "(kd output teacher label alpha=0.5 temperature=4)"
    );
    let e = value("sgd(lr: 0.1)");
    let ExprKind::Call { callee, args } = &e.kind else {
        panic!()
    };
    assert_eq!(callee.name, "sgd");
    assert_eq!(args[0].name.as_ref().unwrap().name, "lr");
}

#[test]
fn paths_lists_maps_strings_and_numbers() {
    let e = value("encoder.dense1.weight");
    let ExprKind::Path(segs) = &e.kind else {
        panic!()
    };
    assert_eq!(
        segs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["encoder", "dense1", "weight"]
    );
    assert_eq!(v("[encoder, head.dense1]"), "[encoder head.dense1]");
    assert_eq!(v("[[0, 0], [0, 1],]"), "[[0 0] [0 1]]");
    assert_eq!(v("[]"), "[]");
    assert_eq!(v("{ encoder: 0.1, head: 1 }"), "{encoder: 0.1 head: 1}");
    assert_eq!(
        v("{ encoder: 0.1\n head.dense1: 2 }"),
        "{encoder: 0.1 head.dense1: 2}"
    );
    assert_eq!(v("{}"), "{}");
    assert_eq!(v("true"), "true");
    let ExprKind::Str(s) = value(r#""a \"quoted\" \\ path\n""#).kind else {
        panic!()
    };
    assert_eq!(s, "a \"quoted\" \\ path\n");
    for (src, want) in [
        ("64", 64.0),
        ("0.01", 0.01),
        ("1e-4", 1e-4),
        ("2.5E+3", 2500.0),
        ("3.0", 3.0),
    ] {
        let ExprKind::Number { value, text } = value(src).kind else {
            panic!()
        };
        assert_eq!((value, text.as_str()), (want, src));
    }
}

#[test]
fn every_takes_a_unit_and_optional_metrics() {
    assert_eq!(
        v("every 1 epoch [loss, accuracy]"),
        "(every 1 epoch [loss accuracy])"
    );
    assert_eq!(v("every 2 epochs"), "(every 2 epochs)");
    assert_eq!(v("every 500 steps [loss]"), "(every 500 steps [loss])");
    assert_eq!(v("every 1 step []"), "(every 1 step [])");
}

#[test]
fn settings_take_optional_commas_and_keyword_keys() {
    let f = ok("data d { train: inline(x: [[0]], y: [[1]]), split: 0.5 } train r: M on d { batch: 4 epochs: 2, }");
    let Item::Data(d) = &f.items[0] else { panic!() };
    assert_eq!(d.settings.len(), 2);
    assert_eq!(sx(&d.settings[0].value), "(inline x=[[0]] y=[[1]])");
    let Item::Train(t) = &f.items[1] else {
        panic!()
    };
    assert_eq!(t.name.as_ref().unwrap().name, "r");
    assert_eq!(t.settings.len(), 2);
}

#[test]
fn statements_may_be_separated_by_commas_and_span_lines() {
    let f = ok("model M(x: [4]) { a = x, b = a\n  |> relu\n  |> dense(2), return b }");
    let m = model(&f, 0);
    assert_eq!(m.body.len(), 3);
    let Stmt::Let { value, .. } = &m.body[1] else {
        panic!()
    };
    assert_eq!(sx(value), "(|> (|> a relu) (dense 2))");
}

#[test]
fn spans_cover_exactly_their_text() {
    let src = "model Net(x: [784]) -> [10] {\n    h = x |> dense(128) as fc  // c\n    return -h * 2\n}\ntrain run: Net on mnist { lr_scale: { fc: 0.5 }, eval: every 2 epochs [loss] }\n";
    let f = ok(src);
    let m = model(&f, 0);
    assert_eq!(text(src, m.span), &src[..src.find("}\ntrain").unwrap() + 1]);
    assert_eq!(text(src, m.name.span), "Net");
    assert_eq!(text(src, m.inputs[0].ty.span), "[784]");
    assert_eq!(text(src, m.output.as_ref().unwrap().span), "[10]");
    let Stmt::Let { name, value, span } = &m.body[0] else {
        panic!()
    };
    assert_eq!(text(src, *span), "h = x |> dense(128) as fc");
    assert_eq!(text(src, name.span), "h");
    assert_eq!(text(src, value.span), "x |> dense(128) as fc");
    let ExprKind::Pipe {
        input,
        stage,
        alias,
    } = &value.kind
    else {
        panic!()
    };
    assert_eq!(text(src, input.span), "x");
    assert_eq!(text(src, stage.span), "dense(128)");
    assert_eq!(text(src, alias.as_ref().unwrap().span), "fc");
    let ExprKind::Call { callee, args } = &stage.kind else {
        panic!()
    };
    assert_eq!(text(src, callee.span), "dense");
    assert_eq!(text(src, args[0].value.span), "128");
    let Stmt::Return { value, span } = &m.body[1] else {
        panic!()
    };
    assert_eq!(text(src, *span), "return -h * 2");
    assert_eq!(text(src, value.span), "-h * 2");
    let ExprKind::Binary { lhs, .. } = &value.kind else {
        panic!()
    };
    assert_eq!(text(src, lhs.span), "-h");

    let Item::Train(t) = &f.items[1] else {
        panic!()
    };
    assert!(text(src, t.span).starts_with("train run:") && text(src, t.span).ends_with('}'));
    assert_eq!(text(src, t.name.as_ref().unwrap().span), "run");
    assert_eq!(text(src, t.settings[0].span), "lr_scale: { fc: 0.5 }");
    let ExprKind::Map(es) = &t.settings[0].value.kind else {
        panic!()
    };
    assert_eq!(text(src, es[0].0.span), "fc");
    assert_eq!(text(src, t.settings[1].value.span), "every 2 epochs [loss]");
    let ExprKind::Every { unit, metrics, .. } = &t.settings[1].value.kind else {
        panic!()
    };
    assert_eq!(text(src, unit.span), "epochs");
    assert_eq!(text(src, metrics.as_ref().unwrap()[0].span), "loss");
}

#[test]
fn parenthesized_expressions_span_their_parentheses() {
    let src = "train M on d { k: (a + b) * c }";
    let f = ok(src);
    let Item::Train(t) = &f.items[0] else {
        panic!()
    };
    let ExprKind::Binary { lhs, .. } = &t.settings[0].value.kind else {
        panic!()
    };
    assert_eq!(text(src, lhs.span), "(a + b)");
    assert_eq!(sx(lhs), "(+ a b)");
}

#[test]
fn dotted_map_keys_keep_the_whole_path() {
    let e = value("{ encoder.dense1: 0.1 }");
    let ExprKind::Map(es) = &e.kind else { panic!() };
    assert_eq!(es[0].0.name, "encoder.dense1");
}

#[test]
fn the_printer_shows_one_node_a_line_with_spans() {
    let src = "model M(x: i32[2]) { y = -x + 1 |> dense(3, bias: 0) as d\n return y }\ndata d { train: csv(\"a.csv\") }\ntrain M on d { eval: every 1 epoch [loss], m: {a: [1]} }";
    insta::assert_snapshot!(print_ast(&ok(src)));
}

#[test]
fn printing_is_stable_across_reparsing_the_same_text() {
    let a = print_ast(&ok(CONVNET));
    let b = print_ast(&ok(CONVNET));
    assert_eq!(a, b);
    assert_eq!(a.lines().next(), Some("file (4 items)"));
    assert!(a.lines().all(|l| !l.trim().is_empty()));
}

// ---------------------------------------------------------------- errors

#[test]
fn an_unclosed_call_points_at_the_token_that_should_have_closed_it() {
    let (d, at) = err("model M(x: [2]) { return dense(10 }");
    assert_eq!(d.message, "expected `)` or `,`, found `}`");
    assert_eq!(at, "}");
    assert_eq!(d.help.as_deref(), Some("add the missing `)`"));
    assert_eq!(d.related.len(), 1);
    assert_eq!(d.related[0].0, Span::new(30, 31), "points at the `(`");
}

#[test]
fn an_early_end_of_file_points_at_the_last_token() {
    let src = "model M(x: [2]) {\n  y = x |> relu\n";
    let (d, at) = err(src);
    assert_eq!(
        d.message,
        "unexpected end of file, expected `}` or a statement"
    );
    assert_eq!(at, "relu");
    assert_eq!(d.help.as_deref(), Some("add the missing `}`"));
    let (d, at) = err("model");
    assert_eq!(d.message, "unexpected end of file, expected a name");
    assert_eq!(at, "model");
}

#[test]
fn equals_in_settings_is_explained() {
    let (d, at) = err("train M on d {\n  batch = 32\n}");
    assert_eq!(
        d.message,
        "settings are written `key: value`, not `key = value`"
    );
    assert_eq!(at, "=");
    assert_eq!(d.help.as_deref(), Some("write `batch: ...`"));
}

#[test]
fn several_independent_mistakes_are_reported_together() {
    let ds = errs("train M on d { batch = 32, epochs = 2 }\nmodel N(x: [1]) { y: x\n return y }");
    let msgs: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "settings are written `key: value`, not `key = value`",
            "settings are written `key: value`, not `key = value`",
            "a model binds names with `=`, not `:`"
        ]
    );
}

#[test]
fn colon_in_a_model_body_is_explained() {
    let (d, at) = err("model M(x: [2]) { y: x |> relu\n return y }");
    assert_eq!(d.message, "a model binds names with `=`, not `:`");
    assert_eq!(at, ":");
    assert_eq!(d.help.as_deref(), Some("write `y = ...`"));
}

#[test]
fn a_missing_return_is_explained() {
    let (d, at) = err("model M(x: [2]) {\n  x |> dense(1) |> sigmoid\n}");
    assert_eq!(d.message, "missing `return` before the model's result");
    assert_eq!(at, "x |> dense(1) |> sigmoid");
    assert_eq!(
        d.help.as_deref(),
        Some("write `return` in front of the last expression")
    );

    let (d, at) = err("model M(x: [2]) { y = x }");
    assert_eq!(d.message, "model `M` has no `return`");
    assert_eq!(at, "}");
    assert_eq!(d.related[0].0, Span::new(6, 7));
}

#[test]
fn statements_after_return_are_refused() {
    let (d, at) = err("model M(x: [2]) { return x\n y = x }");
    assert_eq!(d.message, "statement after `return`");
    assert_eq!(at, "y = x");
    let (_, at) = err("model M(x: [2]) { return x return x }");
    assert_eq!(at, "return x", "the second return");
}

#[test]
fn a_keyword_cannot_be_a_name() {
    let (d, at) = err("model data(x: [2]) { return x }");
    assert_eq!(d.message, "expected a name, found keyword `data`");
    assert_eq!(at, "data");
    assert_eq!(
        d.help.as_deref(),
        Some("`data` is a keyword; choose another name")
    );
}

#[test]
fn a_missing_on_is_named() {
    let (d, at) = err("train M mnist { }");
    assert_eq!(d.message, "expected `:` or `on`, found `mnist`");
    assert_eq!(at, "mnist");
}

#[test]
fn equals_in_named_arguments_is_explained() {
    let (d, at) = err("model M(x: [2]) { return x |> conv2d(8, kernel=3) }");
    assert_eq!(at, "=");
    assert!(d.message.ends_with("found `=`"), "{}", d.message);
    assert_eq!(
        d.help.as_deref(),
        Some("named arguments and entries use `:`: write `kernel: ...`")
    );
}

#[test]
fn semicolons_and_single_quotes_get_a_hint() {
    let (d, at) = err("model M(x: [2]) { y = x; return y }");
    assert_eq!(d.message, "expected `}` or a statement, found `;`");
    assert_eq!(at, ";");
    assert!(d.help.unwrap().starts_with("no `;` is needed"));
    let (d, at) = err("data d { train: csv('a.csv') }");
    assert_eq!(at, "'");
    assert!(d.help.unwrap().contains("double quotes"));
}

#[test]
fn an_unterminated_string_points_at_its_start() {
    let (d, at) = err("data d { train: csv(\"a.csv) }\n");
    assert_eq!(d.message, "unterminated string");
    assert_eq!(at, "\"a.csv) }");
}

#[test]
fn bad_escapes_and_huge_numbers_are_refused() {
    let (d, at) = err(r#"data d { train: csv("a\qb") }"#);
    assert_eq!(d.message, "unknown escape `\\q` in a string");
    assert_eq!(at, "\\q");
    let (d, at) = err("train M on d { lr: 1e999 }");
    assert_eq!(d.message, "number `1e999` is too large");
    assert_eq!(at, "1e999");
}

#[test]
fn arithmetic_after_a_pipeline_suggests_parentheses() {
    let (d, at) = err("model M(x: [2]) { return x |> relu * 2 }");
    assert_eq!(at, "*");
    assert!(d.help.unwrap().contains("`|>` binds loosest"));
}

#[test]
fn a_missing_comma_in_a_list_is_pointed_at() {
    let (d, at) = err("train M on d { eval: every 1 epoch [loss accuracy] }");
    assert_eq!(d.message, "expected `,` or `]`, found `accuracy`");
    assert_eq!(at, "accuracy");
    assert_eq!(d.help.as_deref(), Some("separate items with `,`"));
    let (d, _) = err("train M on d { eval: every 1 epohc }");
    assert_eq!(d.message, "expected `epoch` or `step`, found `epohc`");
}

#[test]
fn stray_tokens_at_the_top_level() {
    let (d, at) = err("model M(x: [2]) { return x } }");
    assert_eq!(
        d.message,
        "expected `model`, `data`, `train` or end of file, found `}`"
    );
    assert_eq!(at, "}");
    assert_eq!(
        d.help.as_deref(),
        Some("this `}` has no matching opening bracket")
    );
    let (d, _) = err("foo");
    assert_eq!(
        d.message,
        "expected `model`, `data` or `train`, found `foo`"
    );
}

#[test]
fn a_missing_colon_in_an_input_points_at_the_shape() {
    let (d, at) = err("model M(x [2]) { return x }");
    assert_eq!(d.message, "expected `:`, found `[`");
    assert_eq!(at, "[");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for n in [300, 100_000] {
        let src = format!(
            "model M(x: [2]) {{ return {}x{} }}",
            "(".repeat(n),
            ")".repeat(n)
        );
        let (d, at) = err(&src);
        assert_eq!(
            d.message,
            "brackets are nested too deeply (more than 256 levels)"
        );
        assert_eq!(at, "(");
        let src = format!("model M(x: [2]) {{ return {}x }}", "-".repeat(n));
        assert_eq!(
            err(&src).0.message,
            "expression is nested too deeply (more than 256 levels)"
        );
        let src = format!("model M(x: [2]) {{ return x{} }}", " + x".repeat(n));
        assert_eq!(
            err(&src).0.message,
            "expression is nested too deeply (more than 256 levels)"
        );
        let src = format!("model M(x: [2]) {{ return x{} }}", " |> relu".repeat(n));
        assert_eq!(
            err(&src).0.message,
            "expression is nested too deeply (more than 256 levels)"
        );
    }
    // Just under the limits is fine.
    let src = format!(
        "model M(x: [2]) {{ return {}x{} }}",
        "(".repeat(200),
        ")".repeat(200)
    );
    ok(&src);
    let src = format!("model M(x: [2]) {{ return x{} }}", " |> relu".repeat(200));
    ok(&src);
}

#[test]
fn the_boolean_constants_cannot_be_defined() {
    let (d, at) = err("model M(x: [2]) { true = x\n return true }");
    assert_eq!(
        d.message,
        "`true` is a constant and cannot be used as a name"
    );
    assert_eq!(at, "true");
    let (_, at) = err("model M(false: [2]) { return false }");
    assert_eq!(at, "false");
    // As values they are plain names.
    assert_eq!(v("true"), "true");
}

#[test]
fn numbers_need_digits_on_both_sides_of_the_point() {
    let (d, at) = err("train M on d { lr: .5 }");
    assert_eq!(at, ".");
    assert_eq!(
        d.help.as_deref(),
        Some("write a digit before the point: `0.5`")
    );
    let (d, at) = err("train M on d { lr: 1. }");
    assert_eq!(at, ".");
    assert_eq!(
        d.help.as_deref(),
        Some("write a digit after the point: `1.0`")
    );
}

#[test]
fn every_example_in_the_language_reference_parses() {
    let blocks = common::spec_examples();
    assert!(blocks.len() >= 5, "found {} examples", blocks.len());
    for b in &blocks {
        ok(b);
    }
}

#[test]
fn unbalanced_brackets_say_which_one_to_fix() {
    // An extra closer.
    let (d, at) = err("model M(x: [2]) {\n  h = x |> dense(4)) |> relu\n  return h\n}");
    assert_eq!(d.message, "expected `}` or a statement, found `)`");
    assert_eq!(at, ")");
    assert_eq!(
        d.help.as_deref(),
        Some("remove this `)`: it closes no open bracket")
    );
    // A call left open before the next setting.
    let src = "data d {\n  train: idx(\"a\", \"b\"\n  test: idx(\"c\", \"d\")\n}";
    let (d, at) = err(src);
    assert_eq!(d.message, "expected `)` or `,`, found `test`");
    assert_eq!(at, "test");
    assert_eq!(d.help.as_deref(), Some("add the missing `)`"));
    assert_eq!(text(src, d.related[0].0), "(");
    // The input list left open before the body.
    let (d, at) = err("model M(x: [2] {\n  return x\n}");
    assert_eq!(at, "{");
    assert_eq!(d.help.as_deref(), Some("add the missing `)`"));
}

#[test]
fn other_languages_habits_get_a_hint() {
    let (d, at) = err("model M(x: [2]) {\n  let h = x\n  return h\n}");
    assert_eq!(d.message, "`let` is not needed");
    assert_eq!(at, "let");
    for bad in ["x => relu", "x | relu", "x > relu", "x -> relu"] {
        let (d, _) = err(&format!("model M(x: [2]) {{ return {bad} }}"));
        assert_eq!(
            d.help.as_deref(),
            Some("a pipeline is written `|>`: `x |> relu`"),
            "{bad}"
        );
    }
    let (d, at) = err("model M(x: [2]) { return x ** 2 }");
    assert_eq!(at, "*");
    assert_eq!(
        d.help.as_deref(),
        Some("there is no power operator: multiply, `x * x`")
    );
}

#[test]
fn errors_in_several_items_are_reported_together_in_source_order() {
    let src = "model A(x: [2]) -> [1] {\n    h = x |> dense(4 |> relu\n    return h\n}\n\nmodel B(x: [2]) -> [1] {\n    return x |> dense(1)\n\ndata d {\n    train: csv(\"a.csv\")\n}\n\ntrain A on d {\n    optimizer: sgd(lr: 0.1\n}\n\ntrain B on d { batch = 3 }\n";
    let ds = errs(src);
    let got: Vec<(&str, &str)> = ds
        .iter()
        .map(|d| (d.message.as_str(), text(src, d.span)))
        .collect();
    assert_eq!(
        got,
        [
            ("expected `(`, `)` or `,`, found keyword `return`", "return"),
            ("expected `}` or a statement, found keyword `data`", "data"),
            ("expected `)` or `,`, found `}`", "}"),
            ("settings are written `key: value`, not `key = value`", "="),
        ]
    );
    assert_eq!(ds[1].help.as_deref(), Some("add the missing `}`"));
}

#[test]
fn a_missing_brace_does_not_cascade_into_the_following_items() {
    let src = "model A(x: [2]) {\n  return x\n\nmodel B(x: [2]) { return x }\nmodel C(x: [2]) { return x }\n";
    let ds = errs(src);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(text(src, ds[0].span), "model");
    assert_eq!(ds[0].span.start, src.find("model B").unwrap());
}

#[test]
fn recovery_stops_after_ten_errors() {
    let src = "model M(x: [2]) { return x |> }\n".repeat(30);
    assert_eq!(errs(&src).len(), 10);
}

#[test]
fn subtraction_after_a_pipeline_is_explained() {
    let (d, at) = err("model M(x: [2]) {\n  return x |> relu - 1\n}");
    assert_eq!(d.message, "arithmetic after a pipeline stage");
    assert_eq!(at, "- 1");
    assert!(d.help.unwrap().contains("`(x |> f) - y`"));
}

#[test]
fn a_backslash_cannot_continue_a_string_on_the_next_line() {
    let (d, at) = err("data d { train: csv(\"a\\\n.csv\") }");
    assert_eq!(d.message, "unterminated string");
    assert_eq!(at, "\"a\\");
}

#[test]
fn a_byte_order_mark_is_whitespace() {
    let f = ok("\u{FEFF}model M(x: [2]) { return x }");
    assert_eq!(model(&f, 0).name.span, Span::new(9, 10));
}

#[test]
fn a_misplaced_quote_is_suspected() {
    let (d, at) = err("data d { train: idx(\"a.gz, \"b.gz\") }");
    assert_eq!(at, "b");
    assert_eq!(
        d.help.as_deref(),
        Some("the string \"a.gz, \" ends right before this: is a `\"` missing or extra?")
    );
}
