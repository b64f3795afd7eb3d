//! Stage 1: the `.nn` text to an AST ([`ast`]), with a pest grammar (`grammar/nn.pest`).
//!
//! [`parse`] never panics: over-deep nesting is refused before pest runs, pest's errors are turned
//! into [`Diag`]s that name what was expected in words and point at the offending token, and
//! common mistakes accepted by the grammar's error productions get a precise message and a fix.

pub mod ast;
mod error;
mod expr;
mod hints;
mod lex;
mod parser;
mod print;

use crate::diag::Diag;

pub use print::print_ast;

/// Parses a whole `.nn` file. Syntax errors come back as diagnostics with code `nnc::syntax`.
pub fn parse(src: &str) -> Result<ast::File, Vec<Diag>> {
    // Needed for the literal tokens (`)`, `:`) named in "expected ..." messages.
    pest::set_error_detail(true);
    error::check_nesting(src)?;
    match parser::parse_tree(src) {
        Ok(pairs) => parser::build_file(pairs),
        Err(e) => Err(vec![error::from_pest(src, &e)]),
    }
}
