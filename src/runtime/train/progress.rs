//! What a run reports while it trains: an `indicatif` bar on stderr (loss, accuracy, samples/s,
//! ETA; hidden when stderr is not a terminal or when quiet; [`spinner`] for other commands' long
//! work) and an optional JSON-lines log with one object per step and one per evaluation. JSON is
//! written by hand (strings escaped, non-finite numbers as `null`) straight into a buffered file,
//! so logging a step allocates nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Progress display and log of one run.
pub struct Progress {
    bar: ProgressBar,
    /// Whether the bar is drawn (decided once: asking the bar costs a lock a step).
    shown: bool,
    /// `--quiet` (or a rank other than 0): no evaluation lines either.
    quiet: bool,
    last_draw: Instant,
    log: Option<(PathBuf, BufWriter<File>)>,
    run: String,
    acc: Option<f64>,
    /// Exponential moving average of the step losses (the bar shows it: step losses are noisy).
    smooth: Option<f64>,
}

/// One training step as reported.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub samples_per_s: f64,
    /// The total L2 norm of the step's gradients before clipping, when the run clips them
    /// (`clip_grad_norm`); logged as `grad_norm` only then.
    pub grad_norm: Option<f64>,
}

/// One evaluation as reported.
#[derive(Clone, Copy, Debug)]
pub struct EvalInfo {
    pub step: u64,
    pub epoch: u64,
    /// `None` for a metric the run's `eval:` does not list.
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub samples: usize,
}

/// The fields of an evaluation record after its `run`, as `nnc train` and `nnc eval` log them:
/// `step` and `epoch` (`null` where not known), `samples`, `loss`, `accuracy` (`null` for a
/// metric not measured).
pub fn eval_fields<W: Write>(
    o: &mut Record<'_, W>,
    step: Option<u64>,
    epoch: Option<u64>,
    samples: usize,
    loss: Option<f64>,
    accuracy: Option<f64>,
) -> std::io::Result<()> {
    o.uint("step", step)?.uint("epoch", epoch)?;
    o.uint("samples", Some(samples as u64))?;
    o.num("loss", loss)?.num("accuracy", accuracy)?;
    Ok(())
}

/// One line of a JSON-lines log, written field by field straight into `w` (nothing allocated):
/// `{"type":…,"run":…` first, then each field in order, then `}` and the newline ([`Record::end`]).
pub struct Record<'w, W: Write> {
    w: &'w mut W,
}

impl<'w, W: Write> Record<'w, W> {
    /// Starts a record of `type` `kind`, with its `run` when it has one.
    pub fn new(w: &'w mut W, kind: &str, run: &str) -> std::io::Result<Self> {
        w.write_all(b"{\"type\":")?;
        write_str(w, kind)?;
        let mut o = Record { w };
        if !run.is_empty() {
            o.str("run", run)?;
        }
        Ok(o)
    }

    /// A string field.
    pub fn str(&mut self, key: &str, v: &str) -> std::io::Result<&mut Self> {
        self.key(key)?;
        write_str(self.w, v)?;
        Ok(self)
    }

    /// A number field; `null` for `None`, NaN and the infinities.
    pub fn num(&mut self, key: &str, v: Option<f64>) -> std::io::Result<&mut Self> {
        self.key(key)?;
        write_num(self.w, v.unwrap_or(f64::NAN))?;
        Ok(self)
    }

    /// An integer field; `null` for `None`.
    pub fn uint(&mut self, key: &str, v: Option<u64>) -> std::io::Result<&mut Self> {
        self.key(key)?;
        match v {
            Some(v) => write!(self.w, "{v}")?,
            None => self.w.write_all(b"null")?,
        }
        Ok(self)
    }

    /// A field of strings, `[…]`.
    pub fn strs(&mut self, key: &str, v: &[String]) -> std::io::Result<&mut Self> {
        self.key(key)?;
        self.w.write_all(b"[")?;
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.w.write_all(b",")?;
            }
            write_str(self.w, s)?;
        }
        self.w.write_all(b"]")?;
        Ok(self)
    }

    /// Ends the record and its line.
    pub fn end(&mut self) -> std::io::Result<()> {
        self.w.write_all(b"}\n")
    }

    fn key(&mut self, key: &str) -> std::io::Result<()> {
        self.w.write_all(b",")?;
        write_str(self.w, key)?;
        self.w.write_all(b":")
    }
}

impl Progress {
    /// `log`: an open JSON-lines file shared by the runs of a session (appended to).
    pub fn new(
        run: &str,
        total_steps: u64,
        quiet: bool,
        log: Option<(PathBuf, BufWriter<File>)>,
    ) -> Progress {
        let shown = drawn(quiet);
        let target = if shown {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total_steps), target)
            .with_style(style)
            .with_prefix(run.to_string());
        Progress {
            bar,
            shown,
            quiet,
            last_draw: Instant::now(),
            log,
            run: run.into(),
            acc: None,
            smooth: None,
        }
    }

    /// Whether [`Progress::step`] shows or logs anything: if not, its rate need not be
    /// measured (a clock read per step is 5% of a 600 ns XOR step).
    pub fn shows_steps(&self) -> bool {
        self.shown || self.log.is_some()
    }

    /// Records a step: the bar is refreshed at most every 100 ms, the log line always written.
    pub fn step(&mut self, s: &StepInfo) -> std::io::Result<()> {
        let smooth = self.smooth.map_or(s.loss, |m| 0.95 * m + 0.05 * s.loss);
        self.smooth = Some(smooth);
        if self.shown && (self.last_draw.elapsed() >= Duration::from_millis(100) || s.step == 1) {
            self.last_draw = Instant::now();
            self.bar.set_position(s.step);
            let acc = self
                .acc
                .map(|a| format!(" acc {:.2}%", a * 100.0))
                .unwrap_or_default();
            self.bar.set_message(format!(
                "loss {}{acc} {:.0} samples/s",
                loss_text(smooth),
                s.samples_per_s
            ));
        }
        if let Some((_, w)) = &mut self.log {
            let mut o = Record::new(w, "step", &self.run)?;
            o.uint("step", Some(s.step))?.uint("epoch", Some(s.epoch))?;
            o.num("loss", Some(s.loss))?.num("lr", Some(s.lr))?;
            o.num("samples_per_s", Some(s.samples_per_s))?;
            if let Some(n) = s.grad_norm {
                o.num("grad_norm", Some(n))?;
            }
            o.end()?;
        }
        Ok(())
    }

    /// Records an evaluation: printed on stderr unless quiet (above the bar when it is drawn;
    /// a line of its own in a file or a pipe, which gets no bar).
    pub fn eval(&mut self, e: &EvalInfo) -> std::io::Result<()> {
        self.acc = e.accuracy;
        if !self.quiet {
            let loss = e.loss.map(|l| format!("loss {}", loss_text(l)));
            let acc = e.accuracy.map(|a| format!("accuracy {:.2}%", a * 100.0));
            let shown: Vec<String> = loss.into_iter().chain(acc).collect();
            let line = format!(
                "{} epoch {} step {}: test {}",
                self.run,
                e.epoch,
                e.step,
                shown.join(", ")
            );
            if self.shown {
                self.bar.println(line);
            } else {
                eprintln!("{line}");
            }
        }
        if let Some((_, w)) = &mut self.log {
            let mut o = Record::new(w, "eval", &self.run)?;
            let (step, epoch) = (Some(e.step), Some(e.epoch));
            eval_fields(&mut o, step, epoch, e.samples, e.loss, e.accuracy)?;
            o.end()?;
            w.flush()?;
        }
        Ok(())
    }

    /// A note said before the run trains: `note: {text}` on stderr unless quiet, and in the log
    /// the record that `record` writes.
    pub fn note(
        &mut self,
        text: &str,
        record: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if !self.quiet {
            eprintln!("note: {text}");
        }
        match &mut self.log {
            Some((_, w)) => record(w),
            None => Ok(()),
        }
    }

    /// A warning said before the run trains, on stderr (the file was checked already; this is
    /// what only the data could tell). Said under `--quiet` too, as the checker's warnings are:
    /// quiet leaves out the progress, not what the user should fix. `root`: whether this is
    /// the process that speaks for an MPI job (the others are quiet without being asked).
    pub fn warn(&self, text: &str, root: bool) {
        if root {
            eprintln!("warning: {text}");
        }
    }

    /// Writes out what the log holds so far.
    pub fn flush_log(&mut self) -> std::io::Result<()> {
        match &mut self.log {
            Some((_, w)) => w.flush(),
            None => Ok(()),
        }
    }

    /// Clears the bar and hands the log back (flushed) for the next run.
    pub fn finish(mut self) -> std::io::Result<Option<(PathBuf, BufWriter<File>)>> {
        self.bar.finish_and_clear();
        if let Some((_, w)) = &mut self.log {
            w.flush()?;
        }
        Ok(self.log.take())
    }
}

/// A loss as printed: 4 decimals, or 4 significant digits in scientific notation from 1e6 on
/// (a diverging run's 1.26e24 would otherwise print as 25 digits and break the summary's columns).
pub fn loss_text(l: f64) -> String {
    if l.is_finite() && l.abs() >= 1e6 {
        format!("{l:.3e}")
    } else {
        format!("{l:.4}")
    }
}

/// Whether progress is drawn on stderr: not when quiet, nor when stderr is not a terminal (a
/// file or a pipe, which would fill with redraws).
fn drawn(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A spinner with `message` and the time elapsed, for long work that counts no steps
/// (`nnc gradcheck`'s finite differences, `nnc sample`'s generation): drawn where a run's bar
/// is, ticking on its own thread until `finish_and_clear`.
pub fn spinner(message: String) -> ProgressBar {
    if !drawn(false) {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(message);
    // Drawn at once: short work is cleared before the first tick.
    bar.tick();
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Opens a JSON-lines log for appending, creating it if missing: a run resumed with the same
/// `--log-json` adds its steps after those of the run it continues instead of wiping them. A log
/// whose last line was cut off (a killed process loses the tail of its buffer) first gets the
/// newline it lacks, so that the records appended after it stay one a line.
pub fn open_log(path: &Path) -> std::io::Result<(PathBuf, BufWriter<File>)> {
    // Said as `--checkpoint` says it (the OS says only "No such file or directory").
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("there is no folder {}", dir.display()),
        ));
    }
    // The OS says only "Is a directory".
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a folder: give the path of a file in it, e.g. `run.jsonl`",
        ));
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    if ends_unterminated(path)? {
        f.write_all(b"\n")?;
    }
    Ok((path.to_path_buf(), BufWriter::new(f)))
}

/// Whether the file at `path` is non-empty and its last byte is not a newline (a FIFO or other
/// non-seekable file is taken as terminated).
fn ends_unterminated(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(false);
    }
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// A JSON number; NaN and infinities (which JSON lacks) as `null`.
fn write_num(w: &mut impl Write, x: f64) -> std::io::Result<()> {
    if x.is_finite() {
        write!(w, "{x}")
    } else {
        w.write_all(b"null")
    }
}

/// A JSON string with `"`, `\` and control characters escaped.
pub fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(b"\"")?;
    for c in s.chars() {
        match c {
            '"' => w.write_all(b"\\\"")?,
            '\\' => w.write_all(b"\\\\")?,
            '\n' => w.write_all(b"\\n")?,
            '\r' => w.write_all(b"\\r")?,
            '\t' => w.write_all(b"\\t")?,
            c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32)?,
            c => write!(w, "{c}")?,
        }
    }
    w.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_numbers_are_valid_json() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
        let mut out = Vec::new();
        write_num(&mut out, f64::NAN).unwrap();
        write_num(&mut out, 0.5).unwrap();
        assert_eq!(out, b"null0.5");
    }

    #[test]
    fn the_log_is_appended_to_and_a_cut_off_line_is_ended_first() {
        let dir = std::env::temp_dir().join(format!("nnc-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\"").unwrap();
        let (_, mut w) = open_log(&p).unwrap();
        w.write_all(b"{\"c\":3}\n").unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"b\"\n{\"c\":3}\n"
        );
        // Missing: created.
        std::fs::remove_file(&p).unwrap();
        drop(open_log(&p).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        // A folder: said so, with what to give instead.
        let err = open_log(&dir).unwrap_err().to_string();
        assert!(
            err.contains("it is a folder: give the path of a file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
