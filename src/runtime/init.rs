//! Initial parameter values from [`Init`], deterministic per (run seed, parameter path): adding
//! or removing one parameter does not change the values of the others.

use super::rng::Rng;
use crate::ir::{Init, Param};

/// A fresh tensor for `param` under `seed`.
pub fn init_param(param: &Param, seed: u64) -> Vec<f32> {
    let n = param.numel();
    let mut rng = Rng::for_name(seed, &param.path);
    match param.init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Uniform { bound } => {
            let b = bound as f64;
            (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * b) as f32)
                .collect()
        }
        Init::Normal { std } => (0..n).map(|_| (rng.normal() * std as f64) as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str, init: Init) -> Param {
        Param {
            path: path.into(),
            dims: vec![100, 50],
            init,
            frozen: false,
        }
    }

    #[test]
    fn uniform_within_bound_deterministic_and_path_dependent() {
        let a = init_param(&p("d.weight", Init::Uniform { bound: 0.1 }), 1);
        assert!(a.iter().all(|x| x.abs() <= 0.1));
        let max = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.09);
        assert_eq!(
            a,
            init_param(&p("d.weight", Init::Uniform { bound: 0.1 }), 1)
        );
        assert_ne!(
            a,
            init_param(&p("e.weight", Init::Uniform { bound: 0.1 }), 1)
        );
        assert_ne!(
            a,
            init_param(&p("d.weight", Init::Uniform { bound: 0.1 }), 2)
        );
    }

    #[test]
    fn normal_std_and_zeros() {
        let a = init_param(&p("emb", Init::Normal { std: 2.0 }), 0);
        let var = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var.sqrt() - 2.0).abs() < 0.1, "{var}");
        assert!(init_param(&p("b", Init::Zeros), 0)
            .iter()
            .all(|&x| x == 0.0));
    }
}
