//! Stage 1: the `.nn` text to an AST ([`ast`]), with a pest grammar (`grammar/nn.pest`).

pub mod ast;
