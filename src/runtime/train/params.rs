//! A run's starting parameters: fresh from their initializers, or matched by path from an earlier
//! run or a checkpoint (`init`, `--init`); teacher parameters (under `teacher.`) from the teacher
//! run or its checkpoint. Also the per-parameter lr multipliers of `lr_scale`.

use super::{TrainError, TrainOptions};
use crate::ir::{Graph, InitFrom, Param, Program, RunSpec};
use crate::runtime::checkpoint::{first_non_finite, per_run_path, Checkpoint, Tensor};
use crate::runtime::init::init_param;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Named parameter tensors (paths → values).
pub type Tensors = BTreeMap<String, Tensor>;

/// Prefix of teacher parameters in a distillation run's graph.
pub const TEACHER: &str = "teacher.";

/// Whether `prefix` (`encoder`, `encoder.dense1`) names `path` or a group containing it.
fn covers(prefix: &str, path: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// The lr multiplier of `path`: the longest matching prefix of `scales` wins; 1 if none matches.
pub fn lr_scale(path: &str, scales: &[(String, f64)]) -> f64 {
    scales
        .iter()
        .filter(|(p, _)| covers(p, path))
        .max_by_key(|(p, _)| p.len())
        .map_or(1.0, |(_, s)| *s)
}

/// The parameters run `r` ended with: from this session, or else from a checkpoint it wrote,
/// so that a later run can be trained on its own. With `--checkpoint C`, that is first the file
/// an earlier training of the whole file gave run `r` ([`per_run_path`]: `C`'s stem, then the
/// run's name), then the run's own `checkpoint:`.
fn run_params<'t>(
    r: &str,
    setting: &str,
    program: &Program,
    trained: &'t BTreeMap<String, Tensors>,
    opts: &TrainOptions,
) -> Result<Cow<'t, Tensors>, String> {
    if let Some(t) = trained.get(r) {
        return Ok(Cow::Borrowed(t));
    }
    let per_run = opts.checkpoint.as_ref().map(|c| per_run_path(c, r));
    let own = program.run(r).and_then(|s| s.checkpoint.as_ref());
    let own = own.map(|f| crate::runtime::data::resolve(f, &opts.base_dir));
    let path = match (per_run, own) {
        (Some(p), _) if p.is_file() => p,
        (_, Some(p)) => p,
        (per_run, None) => {
            let looked = per_run.map_or(String::new(), |p| {
                format!(", and there is no {} from `--checkpoint`", p.display())
            });
            return Err(format!(
                "`{setting}: {r}` needs run `{r}` to have run first (it writes no `checkpoint:` \
                 to start from{looked})"
            ));
        }
    };
    match Checkpoint::load(&path) {
        Ok(ck) => Ok(Cow::Owned(ck.tensors)),
        Err(e) => Err(format!(
            "`{setting}: {r}`: run `{r}` has not run in this session, and {e}"
        )),
    }
}

/// The values of tensor `t`, taken for a parameter of shape `dims`: `name` (as a message says
/// it) from `what`, refused when its shape differs or it holds a value that is not finite.
fn take(t: &Tensor, name: &str, dims: &[usize], what: &str) -> Result<Vec<f32>, String> {
    if t.dims != dims {
        return Err(format!(
            "{name} from {what} has shape {:?}, the model expects {dims:?}",
            t.dims
        ));
    }
    if let Some((index, value)) = first_non_finite(&t.dims, &t.data) {
        return Err(format!(
            "{name} from {what} holds {value} at index {index}; a run cannot start from values \
             that are not finite"
        ));
    }
    Ok(t.data.clone())
}

/// Starting values of every parameter of `graph`, in its order.
pub fn initial(
    program: &Program,
    spec: &RunSpec,
    graph: &Graph,
    opts: &TrainOptions,
    trained: &BTreeMap<String, Tensors>,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let setup = |msg: String| TrainError::Setup {
        run: spec.name.clone(),
        msg,
    };
    let ck_err = |source| TrainError::Checkpoint {
        run: spec.name.clone(),
        source,
    };
    let resolve = |p: &str| -> PathBuf { crate::runtime::data::resolve(p, &opts.base_dir) };

    // The tensors the student starts from, if any.
    let init_ck;
    let init_run;
    let init: Option<(&Tensors, String)> = match (&opts.init, &spec.init) {
        (Some(p), _) => {
            init_ck = Checkpoint::load(p).map_err(ck_err)?;
            Some((&init_ck.tensors, p.display().to_string()))
        }
        (None, Some(InitFrom::File(p))) => {
            init_ck = Checkpoint::load(&resolve(p)).map_err(ck_err)?;
            Some((&init_ck.tensors, p.clone()))
        }
        (None, Some(InitFrom::Run(r))) => {
            init_run = run_params(r, "init", program, trained, opts).map_err(&setup)?;
            Some((&*init_run, format!("run `{r}`")))
        }
        (None, None) => None,
    };

    let mut values: Vec<Option<Vec<f32>>> = vec![None; graph.params.len()];
    let mut matched = 0;
    for (i, p) in graph.params.iter().enumerate() {
        if p.path.starts_with(TEACHER) {
            continue;
        }
        if let Some((src, what)) = &init {
            if let Some(t) = src.get(&p.path) {
                let name = format!("`{}`", p.path);
                values[i] = Some(take(t, &name, &p.dims, what).map_err(setup)?);
                matched += 1;
                continue;
            }
        }
        values[i] = Some(init_param(p, spec.seed));
    }
    if let Some((_, what)) = &init {
        if matched == 0 {
            return Err(setup(format!("{what} has none of the model's parameters")));
        }
    }

    // Teacher parameters: every one must be found.
    let teacher: Vec<(usize, &Param)> = graph
        .params
        .iter()
        .enumerate()
        .filter(|(_, p)| p.path.starts_with(TEACHER))
        .collect();
    if !teacher.is_empty() {
        let t = spec.teacher.as_ref().ok_or_else(|| {
            setup("the graph has teacher parameters but the run no teacher".into())
        })?;
        let loaded: Vec<Vec<f32>> = match &t.from {
            InitFrom::File(f) => {
                let ck = Checkpoint::load(&resolve(f)).map_err(ck_err)?;
                let ps: Vec<&Param> = teacher.iter().map(|(_, p)| *p).collect();
                ck.params_for(&ps, TEACHER).map_err(ck_err)?
            }
            InitFrom::Run(r) => {
                let src = run_params(r, "teacher", program, trained, opts).map_err(&setup)?;
                let what = format!("run `{r}`");
                let value = |p: &Param| {
                    let name = &p.path[TEACHER.len()..];
                    let t = src.get(name).ok_or_else(|| {
                        format!("{what} has no parameter `{name}` for the teacher")
                    })?;
                    take(t, &format!("teacher parameter `{name}`"), &p.dims, &what)
                };
                let values = teacher.iter().map(|(_, p)| value(p));
                values.collect::<Result<_, _>>().map_err(setup)?
            }
        };
        for ((i, _), v) in teacher.iter().zip(loaded) {
            values[*i] = Some(v);
        }
    }
    Ok(values.into_iter().map(|v| v.unwrap_or_default()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_on_dot_boundaries() {
        let s = vec![
            ("encoder".to_string(), 0.1),
            ("encoder.dense1".to_string(), 0.5),
        ];
        assert_eq!(lr_scale("encoder.dense1.weight", &s), 0.5);
        assert_eq!(lr_scale("encoder.dense2.weight", &s), 0.1);
        assert_eq!(lr_scale("encoder2.weight", &s), 1.0);
        assert_eq!(lr_scale("head.bias", &s), 1.0);
    }
}
