//! UI tests: every `tests/ui/*.nn` file is wrong on purpose; its rendered diagnostics (parse, then
//! check: errors, or the warnings of a file that checks) must equal `tests/ui/<name>.stderr`.
//! `NNC_BLESS=1 cargo test --test ui` rewrites them.

use nnc::diag::Report;
use std::path::Path;

/// The diagnostics of a file as `nnc check` would print them (without colors).
fn render(name: &str, src: &str) -> Option<String> {
    let diags = match nnc::syntax::parse(src) {
        Err(d) => d,
        Ok(file) => match nnc::check::check_with_warnings(&file) {
            Err(d) => d,
            Ok((_, warnings)) if warnings.is_empty() => return None,
            Ok((_, warnings)) => warnings,
        },
    };
    Some(Report::new(&format!("tests/ui/{name}.nn"), src, diags).render(false))
}

#[test]
fn ui() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("NNC_BLESS").is_some_and(|v| v == "1");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ui exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} ui cases", cases.len());
    let mut failures = Vec::new();
    for path in &cases {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let src = std::fs::read_to_string(path).unwrap();
        let Some(got) = render(&name, &src) else {
            failures.push(format!(
                "{name}: checks without a warning, but a ui case must not"
            ));
            continue;
        };
        let expected_path = path.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{name}: output differs\n--- expected\n{want}\n--- got\n{got}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no {name}.stderr (run with NNC_BLESS=1)\n{got}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} ui cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
