//! A stable, indented print of the AST, one node a line, each with its span as `@start..end`.
//! Used by `nnc ir --stage ast` and by snapshot tests; the format is part of their expectations,
//! so change it only on purpose.
//!
//! Each line is a node kind, its attributes, then the node's span; a name carries its own span
//! glued to it: `let y@21..22 @21..57` is the binding of `y` (the name at 21..22, the statement
//! at 21..57).

use super::ast::*;
use std::fmt::Write;

/// Prints the whole file, two spaces of indentation a level.
pub fn print_ast(file: &File) -> String {
    let mut p = Printer {
        out: String::new(),
        indent: 0,
    };
    p.line(format_args!(
        "file ({})",
        count(file.items.len(), "item", "items")
    ));
    p.nested(|p| {
        for item in &file.items {
            match item {
                Item::Model(m) => p.model(m),
                Item::Data(d) => p.data(d),
                Item::Train(t) => p.train(t),
            }
        }
    });
    p.out
}

struct Printer {
    out: String,
    indent: usize,
}

fn at(s: Span) -> String {
    format!("@{}..{}", s.start, s.end)
}

/// A name with its own span attached (`x@8..9`), told apart from the node's span (` @0..9`).
fn id(i: &Ident) -> String {
    format!("{}{}", i.name, at(i.span))
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Printer {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        let _ = self.out.write_fmt(args);
        self.out.push('\n');
    }

    fn nested(&mut self, f: impl FnOnce(&mut Printer)) {
        self.indent += 1;
        f(self);
        self.indent -= 1;
    }

    fn model(&mut self, m: &Model) {
        self.line(format_args!("model {} {}", id(&m.name), at(m.span)));
        self.nested(|p| {
            for i in &m.inputs {
                p.line(format_args!("input {}", id(&i.name)));
                p.nested(|p| p.ty(&i.ty));
            }
            if let Some(o) = &m.output {
                p.line(format_args!("output"));
                p.nested(|p| p.ty(o));
            }
            for s in &m.body {
                match s {
                    Stmt::Let { name, value, span } => {
                        p.line(format_args!("let {} {}", id(name), at(*span)));
                        p.nested(|p| p.expr(value));
                    }
                    Stmt::Return { value, span } => {
                        p.line(format_args!("return {}", at(*span)));
                        p.nested(|p| p.expr(value));
                    }
                }
            }
        });
    }

    fn ty(&mut self, t: &TypeExpr) {
        let dtype = t.dtype.as_ref().map_or("f32 (implicit)".to_string(), id);
        self.line(format_args!("type {dtype} {}", at(t.span)));
        self.nested(|p| t.dims.iter().for_each(|d| p.expr(d)));
    }

    fn data(&mut self, d: &Data) {
        self.line(format_args!("data {} {}", id(&d.name), at(d.span)));
        self.nested(|p| p.settings(&d.settings));
    }

    fn train(&mut self, t: &Train) {
        let name = t.name.as_ref().map_or("(unnamed)".to_string(), id);
        self.line(format_args!("train {name} {}", at(t.span)));
        self.nested(|p| {
            p.line(format_args!("model {}", id(&t.model)));
            p.line(format_args!("data {}", id(&t.data)));
            p.settings(&t.settings);
        });
    }

    fn settings(&mut self, settings: &[Setting]) {
        for s in settings {
            self.line(format_args!("setting {} {}", id(&s.key), at(s.span)));
            self.nested(|p| p.expr(&s.value));
        }
    }

    fn expr(&mut self, e: &Expr) {
        let sp = at(e.span);
        match &e.kind {
            ExprKind::Number { text, .. } => self.line(format_args!("number {text} {sp}")),
            ExprKind::Str(s) => self.line(format_args!("string {s:?} {sp}")),
            ExprKind::Path(segs) => {
                let names: Vec<&str> = segs.iter().map(|s| s.name.as_str()).collect();
                self.line(format_args!("path {} {sp}", names.join(".")));
            }
            ExprKind::List(items) => {
                self.line(format_args!(
                    "list ({}) {sp}",
                    count(items.len(), "item", "items")
                ));
                self.nested(|p| items.iter().for_each(|i| p.expr(i)));
            }
            ExprKind::Map(entries) => {
                self.line(format_args!(
                    "map ({}) {sp}",
                    count(entries.len(), "entry", "entries")
                ));
                self.nested(|p| {
                    for (k, v) in entries {
                        p.line(format_args!("entry {}", id(k)));
                        p.nested(|p| p.expr(v));
                    }
                });
            }
            ExprKind::Call { callee, args } => {
                self.line(format_args!("call {} {sp}", id(callee)));
                self.nested(|p| {
                    for a in args {
                        match &a.name {
                            None => p.expr(&a.value),
                            Some(n) => {
                                p.line(format_args!("named {}", id(n)));
                                p.nested(|p| p.expr(&a.value));
                            }
                        }
                    }
                });
            }
            ExprKind::Pipe {
                input,
                stage,
                alias,
            } => {
                self.line(format_args!("pipe {sp}"));
                self.nested(|p| {
                    p.expr(input);
                    p.expr(stage);
                    if let Some(a) = alias {
                        p.line(format_args!("as {}", id(a)));
                    }
                });
            }
            ExprKind::Binary { op, lhs, rhs } => {
                self.line(format_args!("binary {} {sp}", op.symbol()));
                self.nested(|p| {
                    p.expr(lhs);
                    p.expr(rhs);
                });
            }
            ExprKind::Neg(x) => {
                self.line(format_args!("neg {sp}"));
                self.nested(|p| p.expr(x));
            }
            ExprKind::Every {
                count,
                unit,
                metrics,
            } => {
                let ms = match metrics {
                    Some(ms) => {
                        let ms: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
                        format!(" [{}]", ms.join(", "))
                    }
                    None => String::new(),
                };
                self.line(format_args!("every {}{ms} {sp}", id(unit)));
                self.nested(|p| p.expr(count));
            }
        }
    }
}
