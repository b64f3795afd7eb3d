//! Reading a `.nn` file and running the front end on it, with diagnostics rendered for the
//! terminal (colour only when stderr is one).

use super::outputs::Named;
use super::CliError;
use crate::diag::{Diag, Report};
use crate::ir::{InitFrom, Program, Source};
use crate::runtime::data::{resolve, DataError};
use crate::syntax::ast;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The files a data source reads, as written in the `.nn` file (relative to `--data-dir`).
pub fn files(s: &Source) -> Vec<&str> {
    match s {
        Source::Inline { .. } => vec![],
        Source::Idx { images, labels } => vec![images, labels],
        Source::Csv { path, .. } | Source::Text { path, .. } => vec![path],
    }
}

/// A checked file and where it came from.
pub struct Loaded {
    pub path: PathBuf,
    pub text: String,
    pub program: Program,
}

impl Loaded {
    /// The folder data paths are resolved against when `--data-dir` is not given.
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The checkpoint file an `init` or `teacher` setting reads: the file it names, or the
    /// `checkpoint:` of the run it names (`None` when that run writes none), relative to the
    /// `.nn` file's folder.
    pub fn checkpoint_of(&self, from: &InitFrom) -> Option<PathBuf> {
        let file = match from {
            InitFrom::File(f) => f,
            InitFrom::Run(r) => self.program.run(r)?.checkpoint.as_ref()?,
        };
        Some(resolve(file, &self.dir()))
    }

    /// The data files run `run` reads (both splits), where `data_dir` puts them, each named
    /// for an error that would write over it.
    pub fn data_files(&self, run: &crate::ir::RunSpec, data_dir: &Path) -> Vec<Named> {
        let Some(d) = self.program.data(&run.data) else {
            return Vec::new();
        };
        let splits = std::iter::once(&d.train).chain(d.test.as_ref().map(|t| &t.0));
        splits
            .flat_map(files)
            .map(|f| Named::new(format!("a data file of `{}`", d.name), resolve(f, data_dir)))
            .collect()
    }

    /// A run-time error about one of the file's data sources, rendered under the source's span
    /// (the `normalize:` line for what it made of a value, else the `train:` or `test:` line
    /// whose file it names, else the whole `data` block). Where
    /// data paths are looked for is said only when a file could not be found or opened: for
    /// what is wrong inside a file that was found, it would point the wrong way.
    pub fn data_error(&self, run: &str, error: &DataError) -> CliError {
        let message = error.to_string();
        let Some(data) = self
            .program
            .run(run)
            .and_then(|r| self.program.data(&r.data))
        else {
            return CliError::user(message);
        };
        let mentions = |s: &Source| files(s).iter().any(|n| message.contains(n));
        let (span, label) = match (&data.test, &data.normalize) {
            (_, Some((_, span))) if matches!(error, DataError::Normalize { .. }) => {
                (*span, "normalizing")
            }
            // A label of the split a `test:` source gives, else of the train source (which
            // `split` may have cut in two).
            (Some((_, span)), _)
                if matches!(
                    error,
                    DataError::Label { split: "test", .. }
                        | DataError::Target { split: "test", .. }
                ) =>
            {
                match error {
                    DataError::Target {
                        what: "input value",
                        ..
                    } => (
                        *span,
                        "checking the inputs (the loss's targets) of the test split of",
                    ),
                    _ => (*span, "checking the labels of the test split of"),
                }
            }
            _ if matches!(
                error,
                DataError::Target {
                    what: "input value",
                    ..
                }
            ) =>
            {
                (
                    data.train_span,
                    "checking the inputs (the loss's targets) of",
                )
            }
            _ if matches!(error, DataError::Label { .. } | DataError::Target { .. }) => {
                (data.train_span, "checking the labels of")
            }
            (Some((test, span)), _) if mentions(test) && !mentions(&data.train) => {
                (*span, "loading the test split of")
            }
            _ if mentions(&data.train) => (data.train_span, "loading the training split of"),
            _ => (data.span, "loading"),
        };
        let mut diag = Diag::new(
            "nnc::data",
            message,
            span,
            format!("while {label} `{}` for run `{run}`", data.name),
        );
        // An input that is its own target (a reconstruction) is checked after `normalize`,
        // which is where a [-1, 1] or standardized scale comes from.
        if let (
            DataError::Target {
                what: "input value",
                ..
            },
            Some((_, span)),
        ) = (error, &data.normalize)
        {
            diag = diag
                .also(*span, "the targets are the inputs as this leaves them")
                .help(
                    "scale the inputs into [0, 1] here, e.g. `normalize: x / 255` for 8-bit \
                     pixels",
                );
        }
        if let Some(sub) = found_below(error) {
            diag = diag.help(format!(
                "data paths are relative to --data-dir (default: the .nn file's folder); the file \
                 is in {}: use `--data-dir {}`",
                sub.display(),
                sub.display()
            ));
        } else if error.is_unreadable_file() {
            diag =
                diag.help("data paths are relative to --data-dir (default: the .nn file's folder)");
        }
        render(&self.path, &self.text, vec![diag])
    }
}

/// For a data file not found, the folder right below the data folder that holds it (a
/// `--data-dir ../shared/data` where the files are in `../shared/data/mnist`), if exactly one
/// does. The data folder of a `.nn` file named without a folder is the empty path: the current
/// folder, listed as `.` (`read_dir("")` fails), its folders named as typed (`mnist`).
fn found_below(error: &DataError) -> Option<PathBuf> {
    let DataError::NotFound { written, dir, .. } = error else {
        return None;
    };
    let listed = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir.as_path()
    };
    let mut holding = std::fs::read_dir(listed)
        .ok()?
        .filter_map(|e| e.ok().map(|e| dir.join(e.file_name())))
        .filter(|sub| sub.is_dir() && sub.join(written).is_file());
    let sub = holding.next()?;
    holding.next().is_none().then_some(sub)
}

pub fn read(path: &Path) -> Result<String, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::user(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        CliError::user(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Parses only (for `--stage ast`).
pub fn parse(path: &Path) -> Result<(String, ast::File), CliError> {
    let text = read(path)?;
    let file = crate::syntax::parse(&text).map_err(|d| render(path, &text, d))?;
    Ok((text, file))
}

/// Reads, parses and checks; prints the file's warnings (on stderr) where it checks.
pub fn load(path: &Path) -> Result<Loaded, CliError> {
    load_warning(path, true, None, None)
}

/// [`load`], printing the warnings only if `warn` (one process of a data-parallel run prints
/// them for all), those about a run's schedule measured against `length` where the command line
/// replaces the length of every run, or of the run `only` (`--steps`, `--epochs`, `--run`).
pub fn load_warning(
    path: &Path,
    warn: bool,
    length: Option<crate::ir::Length>,
    only: Option<&str>,
) -> Result<Loaded, CliError> {
    let (text, ast) = parse(path)?;
    let (program, warnings) = crate::check::check_with_warnings_for(&ast, length, only)
        .map_err(|d| render(path, &text, d))?;
    if warn {
        print_warnings(path, &text, warnings);
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        program,
    })
}

/// Prints `warnings` about the file at `path` (holding `text`) on stderr, if there are any.
pub fn print_warnings(path: &Path, text: &str, warnings: Vec<Diag>) {
    if !warnings.is_empty() {
        let report = Report::new(&path.display().to_string(), text, warnings);
        eprint!("{}", report.render(std::io::stderr().is_terminal()));
    }
}

pub fn render(path: &Path, text: &str, diags: Vec<Diag>) -> CliError {
    let report = Report::new(&path.display().to_string(), text, diags);
    CliError::User(report.render(std::io::stderr().is_terminal()))
}
