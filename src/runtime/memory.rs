//! What a training run needs in memory, known before any data is read, and what the machine
//! has: so that a model declared too large for the machine is refused at check time with the
//! bytes it needs, instead of being killed by the kernel mid-run.
//!
//! The estimate is what the JIT allocates: every parameter, its gradient, its optimizer state
//! and the buffer its update is written to during a step, and the buffers of the training graph
//! (forward and backward) at the run's batch size as the memory plan shares them. The data set itself comes on top (its size is known only
//! once it is read).

use crate::ir::RunSpec;

/// The bytes one training run needs, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// All parameters (a teacher's included).
    pub params: u64,
    /// The gradients of the trainable parameters (outputs of the training graph, in its buffers).
    pub grads: u64,
    /// The optimizer's state (momentum, Adam's moments).
    pub optimizer: u64,
    /// The updated copy of every trainable parameter, written during the step and swapped in
    /// when the step is finite ([`crate::exec::Executor::run_updating`]); in a run that clips
    /// its gradients (`clip_grad_norm`), which updates after the step, the clipped copy of every
    /// gradient instead: as many bytes.
    pub updates: u64,
    /// The other values of the training graph at the run's batch size, as the memory plan lays
    /// them out, and the batch of inputs.
    pub activations: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.params
            .saturating_add(self.grads)
            .saturating_add(self.optimizer)
            .saturating_add(self.updates)
            .saturating_add(self.activations)
    }

    /// `1.56 GiB (parameters 400 MiB, gradients 400 MiB, optimizer state 0 B, updated
    /// parameters 400 MiB, activations 400 MiB)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (parameters {}, gradients {}, optimizer state {}, updated parameters {}, activations {})",
            human(self.total()),
            human(self.params),
            human(self.grads),
            human(self.optimizer),
            human(self.updates),
            human(self.activations)
        )
    }
}

/// The footprint of training `spec`: its backward graph is derived and optimized as for the
/// JIT, and its values counted as the JIT's memory plan lays them out, plus the batch of inputs.
pub fn of_run(spec: &RunSpec) -> Result<Footprint, String> {
    let g = crate::opt::optimize(&crate::autodiff::grad(&spec.graph)?, 1)?;
    let bytes = |n: usize| (n as u64).saturating_mul(4);
    let mut f = Footprint::default();
    for p in &g.params {
        f.params = f.params.saturating_add(bytes(p.numel()));
        if !p.frozen {
            f.grads = f.grads.saturating_add(bytes(p.numel()));
            f.updates = f.updates.saturating_add(bytes(p.numel()));
            f.optimizer = f.optimizer.saturating_add(
                bytes(p.numel()).saturating_mul(spec.optimizer.state_buffers() as u64),
            );
        }
    }
    // The gradients are outputs of the graph, so the plan's buffers hold them: the rest is
    // what the forward and backward passes keep.
    f.activations = crate::opt::memplan::plan(&g)
        .bytes(spec.batch)
        .saturating_sub(f.grads);
    for (v, _) in g.inputs() {
        let ty = g.ty(v);
        let count = if ty.batched { spec.batch as u64 } else { 1 };
        f.activations = f
            .activations
            .saturating_add(bytes(ty.per_sample()).saturating_mul(count));
    }
    Ok(f)
}

/// The memory available to this process: the kernel's estimate of what can be allocated
/// without swapping (`MemAvailable`), lowered by a cgroup limit when there is one. `None` where
/// neither can be read (then nothing is refused unless `--max-memory` is given).
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a size as people write it: `4096`, `512M`, `1.5G`, `2GiB`, `800 MB` (K, M, G, T are
/// powers of 1024, as for `ulimit` and `--max-memory` in other tools), or bytes in scientific
/// notation (`1e9`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    // A number as a whole (`1e9`) is bytes; else digits, then a unit.
    let whole = t.starts_with(|c: char| c.is_ascii_digit()) && t.parse::<f64>().is_ok();
    let split = match whole {
        true => t.len(),
        false => t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len()),
    };
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4096, 512M, 2G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("`{s}`: unknown unit (use K, M, G or T)")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is not a usable memory size"));
    }
    Ok(bytes as u64)
}

/// 1536 → "1.50 KiB": three significant figures, binary units.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{bytes} B"),
        _ if v < 10.0 => format!("{v:.2} {}", UNITS[u]),
        _ if v < 100.0 => format!("{v:.1} {}", UNITS[u]),
        _ => format!("{v:.0} {}", UNITS[u]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_bad_ones_are_refused() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("8kb"), Ok(8192));
        assert_eq!(parse_size("1e3"), Ok(1000));
        assert_eq!(parse_size("2.5E9"), Ok(2_500_000_000));
        for bad in [
            "",
            "G",
            "-1G",
            "0",
            "1.2.3M",
            "5 parsecs",
            "1e400",
            "inf",
            "NaN",
            "1e-3",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_sizes_keep_three_figures() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.50 KiB");
        assert_eq!(human(250 << 20), "250 MiB");
        assert_eq!(human(u64::MAX), "16384 PiB");
    }

    fn xor_run(batch: usize, optimizer: &str) -> RunSpec {
        let src = include_str!("../../examples/xor.nn")
            .replace("batch: 4", &format!("batch: {batch}"))
            .replace("sgd(lr: 1.0)", optimizer);
        let ast = crate::syntax::parse(&src).expect("parses");
        let program = crate::check::check(&ast).expect("checks");
        program.runs[0].clone()
    }

    #[test]
    fn the_footprint_counts_parameters_state_and_batch_sized_values() {
        // 2-4-1: 2·4 + 4 + 4·1 + 1 = 17 parameters.
        let f = of_run(&xor_run(4, "adam(lr: 0.1)")).unwrap();
        assert_eq!(
            (f.params, f.grads, f.optimizer, f.updates),
            (68, 68, 136, 68)
        );
        assert_eq!(of_run(&xor_run(4, "sgd(lr: 1.0)")).unwrap().optimizer, 0);
        let sgdm = of_run(&xor_run(4, "sgd(lr: 1.0, momentum: 0.9)")).unwrap();
        assert_eq!(sgdm.optimizer, 68);
        // Activations grow linearly with the batch, from the unbatched values (the loss, …).
        let a: Vec<u64> = [4, 8, 12]
            .iter()
            .map(|&b| of_run(&xor_run(b, "sgd(lr: 1.0)")).unwrap().activations)
            .collect();
        assert!(a[1] > a[0] && a[2] - a[1] == a[1] - a[0], "{a:?}");
        assert!(a[0] >= a[1] - a[0], "{a:?}");
        assert_eq!(f.total(), 68 + 68 + 136 + 68 + f.activations);
    }
}
