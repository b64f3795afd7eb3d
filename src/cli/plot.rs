//! `nnc plot LOG --out curve.svg`: the training curves of a `--log-json` log as an SVG: the
//! training loss (each step, and its moving average) and the test loss against steps, and the
//! test accuracy when the runs measured it, one colour per run; where early stopping ended a run,
//! and the evaluation `restore_best` put back, are marked, and where a plateau schedule lowered
//! the learning rate.

use super::outputs::{Kind, Named};
use super::{CliError, CliResult};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// A log written by `nnc train --log-json`.
    pub log: PathBuf,
    /// The SVG file to write.
    #[arg(long, short, value_name = "PATH")]
    pub out: PathBuf,
    /// Only this run (default: every run in the log).
    #[arg(long, value_name = "NAME")]
    pub run: Option<String>,
}

/// The curves of one run: of one training of it, when the log holds several (`--log-json`
/// appends, so training the same file twice logs the run twice).
#[derive(Default, Debug)]
struct Curves {
    name: String,
    /// 1 for the run's first training in the log, 2 for the next, …
    attempt: usize,
    /// (step, loss) of every training step.
    train: Vec<(f64, f64)>,
    /// (step, loss, accuracy) of every evaluation (either missing where it was null: not
    /// finite, or not among the metrics the run's `eval:` lists).
    eval: Vec<(f64, Option<f64>, Option<f64>)>,
    /// The step of the last step record, null losses included.
    last_step: Option<f64>,
    /// Where early stopping ended the training (`early_stop`), and the evaluation whose
    /// parameters `restore_best` put back (`restore_best`).
    stopped: Option<f64>,
    restored: Option<f64>,
    /// The steps after which a plateau schedule lowered the learning rate (`lr_reduced`).
    reduced: Vec<f64>,
}

impl Curves {
    /// The run's name, numbered from its second training on.
    fn label(&self) -> String {
        match self.attempt {
            0 | 1 => self.name.clone(),
            n => format!("{} ({n})", self.name),
        }
    }
}

/// Reads the log, one JSON object a line; a line that is not one is an error naming it, except a
/// line cut off mid-object, which a killed `nnc train` leaves behind: it is skipped with a note.
/// A run resumed with the same log continues its step numbers and so its curves; a step number
/// that does not exceed the run's last one starts a new training of that run.
fn read_log(path: &Path) -> Result<Vec<Curves>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::user(format!("cannot read {}: {e}", path.display())))?;
    let mut runs: Vec<Curves> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: &str| {
            CliError::user(format!(
                "{}:{}: {why} (expected a log written by `nnc train --log-json`)",
                path.display(),
                i + 1
            ))
        };
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) if e.is_eof() && line.trim_start().starts_with('{') => {
                eprintln!(
                    "note: {}:{}: skipped a record cut off mid-line (a training that was killed)",
                    path.display(),
                    i + 1
                );
                continue;
            }
            Err(e) => return Err(bad(&format!("not JSON: {e}"))),
        };
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let kind = v.get("type").and_then(|t| t.as_str());
        // `nnc bench --log-json` into the same log: measurements of a run, not points of its
        // curves; nor is what a run starts from (`init`).
        if kind.is_some_and(|k| k.starts_with("bench_") || k == "init") {
            continue;
        }
        let name = v
            .get("run")
            .and_then(|r| r.as_str())
            .ok_or_else(|| bad("no `run`"))?;
        // How early stopping ended the run's latest training: marked on its curves.
        if let Some(k @ ("early_stop" | "restore_best" | "lr_reduced")) = kind {
            let step = field("step").ok_or_else(|| bad("no `step`"))?;
            if let Some(r) = runs.iter_mut().rev().find(|r| r.name == name) {
                match k {
                    "early_stop" => r.stopped = Some(step),
                    "lr_reduced" => r.reduced.push(step),
                    _ => r.restored = Some(step),
                }
            }
            continue;
        }
        // `nnc eval` of a checkpoint that records no step logs its evaluation at no step, and
        // of a run whose data holds no test samples, on the training split: neither is a point
        // of the test curves.
        let off_curve = v.get("step").is_some_and(serde_json::Value::is_null)
            || v.get("split").is_some_and(|s| s != "test");
        if kind == Some("eval") && off_curve {
            continue;
        }
        let step = field("step").ok_or_else(|| bad("no `step`"))?;
        let latest = runs.iter().rposition(|r| r.name == name);
        // The step records of a run's training go up; one that does not starts another.
        let again = |k: usize| {
            kind == Some("step") && runs[k].last_step.is_some_and(|last: f64| step <= last)
        };
        let at = match latest {
            Some(k) if !again(k) => k,
            _ => {
                runs.push(Curves {
                    name: name.into(),
                    attempt: latest.map_or(1, |k| runs[k].attempt + 1),
                    ..Curves::default()
                });
                runs.len() - 1
            }
        };
        // Non-finite losses are logged as null: such a point is left out.
        match kind {
            Some("step") => {
                runs[at].last_step = Some(step);
                if let Some(l) = field("loss") {
                    runs[at].train.push((step, l));
                }
            }
            Some("eval") => runs[at].eval.push((step, field("loss"), field("accuracy"))),
            _ => return Err(bad("`type` is neither \"step\" nor \"eval\"")),
        }
    }
    Ok(runs)
}

/// The steps the training loss of a run of `steps` logged steps is averaged over: about 50
/// points of the curve each, at most 100.
fn smoothing_window(steps: usize) -> usize {
    (steps / 50).clamp(1, 100)
}

/// The legend of a run's smoothed training loss: "A train (mean of 20 steps)", or "A train"
/// when the window is 1 step, its losses as they are ("mean of 1" read as a mistake).
fn train_label(r: &Curves, window: usize) -> String {
    match window {
        1 => format!("{} train", r.label()),
        n => format!("{} train (mean of {n} steps)", r.label()),
    }
}

/// The moving average of `points` over `window` steps (the step losses of a minibatch run are
/// too noisy to read on their own).
fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= window {
                sum -= points[i - window].1;
            }
            (x, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

/// [lo, hi] of `values` with a margin, never empty and always of finite width: the bounds are
/// kept within a quarter of f64's range, so that a loss of 1e308 beside one of -1e308 (or an
/// accuracy of 1e307, 1e309 %) does not make an infinite axis, on which plotters never ends
/// placing its labels. Points beyond the bounds are clipped.
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let (lo, hi) = (lo.max(f64::MIN / 4.0), hi.min(f64::MAX / 4.0));
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1.0) * 0.01);
    (lo - pad)..(hi + pad)
}

fn draw(runs: &[Curves], svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let has_acc = runs.iter().any(|r| r.eval.iter().any(|e| e.2.is_some()));
    let height = if has_acc { 720 } else { 420 };
    let root = SVGBackend::with_string(svg, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = if has_acc {
        root.split_vertically(400)
    } else {
        (root.clone(), root.clone())
    };
    let max_step = runs
        .iter()
        .flat_map(|r| {
            r.train
                .iter()
                .map(|p| p.0)
                .chain(r.eval.iter().map(|e| e.0))
        })
        .fold(1.0f64, f64::max);
    let losses = runs.iter().flat_map(|r| {
        r.train
            .iter()
            .map(|p| p.1)
            .chain(r.eval.iter().filter_map(|e| e.1))
    });
    let mut chart = ChartBuilder::on(&top)
        .caption("loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_step, range(losses))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss")
        .draw()?;
    for (k, r) in runs.iter().enumerate() {
        let colour = Palette99::pick(k).to_rgba();
        let window = smoothing_window(r.train.len());
        if !r.train.is_empty() {
            chart.draw_series(LineSeries::new(r.train.iter().copied(), colour.mix(0.25)))?;
            chart
                .draw_series(LineSeries::new(
                    smooth(&r.train, window),
                    colour.stroke_width(2),
                ))?
                .label(train_label(r, window))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        if r.eval.iter().any(|e| e.1.is_some()) {
            let pts = r.eval.iter().filter_map(|e| Some((e.0, e.1?)));
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(1)))?
                .label(format!("{} test", r.label()))
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, colour.filled()));
            chart.draw_series(pts.map(|p| Circle::new(p, 4, colour.filled())))?;
        }
        // Where early stopping ended it: a vertical line across the chart.
        if let Some(at) = r.stopped {
            let (lo, hi) = (chart.y_range().start, chart.y_range().end);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    [(at, lo), (at, hi)],
                    colour.stroke_width(1),
                )))?
                .label(format!("{} stopped early", r.label()))
                .legend(move |(x, y)| {
                    PathElement::new([(x + 9, y - 7), (x + 9, y + 7)], colour.stroke_width(1))
                });
        }
        // Where a plateau schedule lowered its rate: a triangle on the chart's floor.
        if !r.reduced.is_empty() {
            let lo = chart.y_range().start;
            chart
                .draw_series(
                    r.reduced
                        .iter()
                        .map(|&at| TriangleMarker::new((at, lo), 7, colour.filled())),
                )?
                .label(format!("{} lr lowered", r.label()))
                .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, colour.filled()));
        }
        // The evaluation whose parameters it ended with: a ring around its point.
        let restored = r.restored.and_then(|at| {
            let e = r.eval.iter().rev().find(|e| e.0 == at)?;
            Some((at, e.1?))
        });
        if let Some(p) = restored {
            chart
                .draw_series(std::iter::once(Circle::new(p, 9, colour.stroke_width(2))))?
                .label(format!("{} restored (best)", r.label()))
                .legend(move |(x, y)| Circle::new((x + 9, y), 6, colour.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    if has_acc {
        let accs = runs
            .iter()
            .flat_map(|r| r.eval.iter().filter_map(|e| e.2.map(|a| 100.0 * a)));
        let mut chart = ChartBuilder::on(&bottom)
            .caption("test accuracy", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..max_step, range(accs))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("accuracy %")
            .draw()?;
        for (k, r) in runs.iter().enumerate() {
            let colour = Palette99::pick(k).to_rgba();
            let pts: Vec<(f64, f64)> = r
                .eval
                .iter()
                .filter_map(|e| e.2.map(|a| (e.0, 100.0 * a)))
                .collect();
            chart.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }
    }
    root.present()?;
    Ok(())
}

pub fn run(args: &PlotArgs) -> CliResult {
    let out = Named::new("`--out`", &args.out);
    super::outputs::refuse_overwrite(
        std::slice::from_ref(&out),
        &[Named::new("the log to plot", &args.log)],
    )?;
    super::outputs::refuse_replacing_another_kind(&out, Kind::Svg)?;
    let mut runs = read_log(&args.log)?;
    if let Some(only) = &args.run {
        runs.retain(|r| &r.name == only);
        if runs.is_empty() {
            return Err(CliError::user(format!(
                "{} has no records of run `{only}`",
                args.log.display()
            )));
        }
    }
    if runs.iter().all(|r| r.train.is_empty() && r.eval.is_empty()) {
        return Err(CliError::user(format!(
            "{} holds no finite losses to plot",
            args.log.display()
        )));
    }
    let mut svg = String::new();
    draw(&runs, &mut svg).map_err(|e| CliError::internal(format!("drawing the plot: {e}")))?;
    crate::runtime::atomic::write(&args.out, svg.as_bytes())
        .map_err(|e| CliError::user(format!("cannot write {}: {e}", args.out.display())))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moving_average_covers_the_last_window_steps() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, i as f64)).collect();
        let s: Vec<f64> = smooth(&pts, 2).iter().map(|p| p.1).collect();
        assert_eq!(s, [0.0, 0.5, 1.5, 2.5, 3.5]);
    }

    /// Early stopping's records mark the run they follow: where it stopped, and the evaluation
    /// whose parameters `restore_best` put back, drawn with their legends; so do a plateau
    /// schedule's, where it lowered the rate.
    #[test]
    fn where_early_stopping_ended_a_run_is_marked() {
        let dir = std::env::temp_dir().join(format!("nnc-plot-stop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.jsonl");
        let mut text = String::new();
        for s in 1..=40 {
            text += &format!(
                "{{\"type\":\"step\",\"run\":\"m\",\"step\":{s},\"epoch\":1,\"loss\":0.5,\"lr\":0.1,\"samples_per_s\":1}}\n"
            );
            if s % 10 == 0 {
                text += &format!(
                    "{{\"type\":\"eval\",\"run\":\"m\",\"step\":{s},\"epoch\":1,\"samples\":2,\"loss\":{},\"accuracy\":null}}\n",
                    s as f64 / 10.0
                );
            }
        }
        text += r#"{"type":"early_stop","run":"m","step":40,"monitor":"loss","best":1.0,"best_step":10,"patience":3}"#;
        text += "\n";
        text += r#"{"type":"restore_best","run":"m","step":10}"#;
        text += "\n";
        text += r#"{"type":"lr_reduced","run":"m","step":30,"lr":0.01,"monitor":"loss","best":1.0,"best_step":10,"patience":2}"#;
        std::fs::write(&log, text).unwrap();
        let runs = read_log(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (runs.len(), runs[0].stopped, runs[0].restored),
            (1, Some(40.0), Some(10.0))
        );
        assert_eq!(runs[0].reduced, [30.0]);
        let mut svg = String::new();
        draw(&runs, &mut svg).unwrap();
        for legend in ["m stopped early", "m restored (best)", "m lr lowered"] {
            assert!(svg.contains(legend), "no `{legend}` in the SVG");
        }
    }

    /// A short run's losses are drawn as they are: its legend said "train (mean of 1)".
    #[test]
    fn the_training_legend_names_the_window_only_when_it_averages() {
        let r = Curves {
            name: "Xor".into(),
            attempt: 2,
            ..Curves::default()
        };
        assert_eq!(train_label(&r, smoothing_window(60)), "Xor (2) train");
        assert_eq!(
            train_label(&r, smoothing_window(2000)),
            "Xor (2) train (mean of 40 steps)"
        );
    }

    /// Losses of ±1e308 made the loss axis infinite, and drawing it never ended.
    #[test]
    fn huge_values_give_a_finite_axis() {
        let r = range([1e308, -1e308].into_iter());
        assert!(r.start.is_finite() && r.end.is_finite(), "{r:?}");
        assert!((r.end - r.start).is_finite() && r.start < -1e307 && r.end > 1e307);
        let r = range([1.0, f64::INFINITY].into_iter());
        assert!((r.end - r.start).is_finite() && r.start < 1.0, "{r:?}");
        let runs = [Curves {
            name: "a".into(),
            train: vec![(1.0, 1e308), (2.0, -1e308), (3.0, 1e308), (4.0, 1e308)],
            eval: vec![
                (2.0, Some(1e308), Some(1e307)),
                (4.0, Some(0.5), Some(0.5)),
                // An evaluation that lists accuracy only.
                (6.0, None, Some(0.6)),
            ],
            ..Curves::default()
        }];
        let mut svg = String::new();
        draw(&runs, &mut svg).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
    }

    /// An evaluation whose loss is null (not listed in the run's `eval:`, or not finite) keeps
    /// its accuracy: such records were dropped whole. One of `nnc eval` at no step is left out,
    /// and one on the training split, `nnc bench`'s records (`bench_process` has no run), and
    /// what a run starts from (`init`, at no step).
    #[test]
    fn an_evaluation_without_a_loss_keeps_its_accuracy() {
        let dir = std::env::temp_dir().join(format!("nnc-plot-acc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.jsonl");
        std::fs::write(
            &log,
            concat!(
                r#"{"type":"init","run":"A","from_run":"P","loaded":2,"buffers":0,"fresh":[],"unused":["d.weight"]}"#,
                "\n",
                r#"{"type":"eval","run":"A","step":2,"epoch":1,"samples":4,"loss":null,"accuracy":0.75}"#,
                "\n",
                r#"{"type":"eval","run":"A","step":null,"epoch":null,"samples":4,"loss":0.5,"accuracy":0.5,"split":"test","checkpoint":"a.st"}"#,
                "\n",
                r#"{"type":"eval","run":"A","step":3,"epoch":1,"samples":4,"loss":0.5,"accuracy":0.5,"split":"train","checkpoint":"a.st"}"#,
                "\n",
                r#"{"type":"bench_train","run":"A","threads":2,"compile_ms":20.5,"steps":30,"samples_per_s":1000.0}"#,
                "\n",
                r#"{"type":"bench_process","threads":2,"file":"a.nn","parse_check_ms":1.5}"#,
            ),
        )
        .unwrap();
        let runs = read_log(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(runs[0].eval, [(2.0, None, Some(0.75))]);
    }

    #[test]
    fn a_resumed_run_continues_its_curve_and_a_new_training_starts_another() {
        let dir = std::env::temp_dir().join(format!("nnc-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log.jsonl");
        let step = |run: &str, s: u32| {
            format!(
                r#"{{"type":"step","run":"{run}","step":{s},"epoch":1,"loss":0.5,"lr":0.1,"samples_per_s":1}}"#
            )
        };
        let eval = |s: u32| {
            format!(
                r#"{{"type":"eval","run":"A","step":{s},"epoch":1,"samples":4,"loss":0.5,"accuracy":null}}"#
            )
        };
        // A trained to step 2, resumed to 4, a killed write, then B, then A trained afresh.
        let lines = [
            step("A", 1),
            step("A", 2),
            eval(2),
            step("A", 3),
            step("A", 4),
            r#"{"type":"step","run":"A","st"#.into(),
            step("B", 1),
            step("A", 1),
            step("A", 2),
            eval(2),
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let runs = read_log(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let got: Vec<(String, Vec<f64>, usize)> = runs
            .iter()
            .map(|r| {
                (
                    r.label(),
                    r.train.iter().map(|p| p.0).collect(),
                    r.eval.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("A".into(), vec![1.0, 2.0, 3.0, 4.0], 1),
                ("B".into(), vec![1.0], 0),
                ("A (2)".into(), vec![1.0, 2.0], 1),
            ]
        );
    }
}
