//! `sd-worker bench --ops`: where the time of a job goes, by operation, for
//! the denoiser steps and for the VAE decode separately (one more run of the
//! same job with [`crate::kernels::timing`] switched on). The operations our
//! layers time are listed; "other" is the rest of the stage (linear layers,
//! elementwise ops between layers, the scheduler, the text encoder).

use anyhow::Result;
use std::time::Instant;

use crate::kernels::timing::{self, Op};
use crate::model::LoadedModel;
use crate::pipeline::{generate, Observer, Outcome, Request};

/// `(op, seconds, calls)` of each timed kind of operation.
type Totals = Vec<(Op, f64, u64)>;

/// Per-stage, per-op seconds.
pub(super) struct OpsSplit {
    pub denoise_s: f64,
    pub denoise: Totals,
    pub decode_s: f64,
    pub decode: Totals,
}

/// Snapshots the op totals after the last denoiser step.
struct AtLastStep {
    at: Option<(Instant, Totals)>,
}

impl Observer for AtLastStep {
    fn warning(&mut self, _: &str, _: &str) {}
    fn step(&mut self, step: usize, total: usize) -> bool {
        if step == total {
            self.at = Some((Instant::now(), timing::totals()));
        }
        true
    }
}

/// Runs `req` once more with op timing on.
pub(super) fn measure(model: &LoadedModel, req: &Request) -> Result<OpsSplit> {
    timing::enable(true);
    let t0 = Instant::now();
    let mut observer = AtLastStep { at: None };
    let outcome = generate::run(model, req, &mut observer);
    let end = Instant::now();
    let after = timing::totals();
    timing::enable(false);
    let Outcome::Completed { .. } = outcome? else {
        anyhow::bail!("the benchmark run was cancelled");
    };
    let Some((at, mid)) = observer.at else {
        anyhow::bail!("the job ran no denoiser step");
    };
    let decode = after
        .iter()
        .zip(&mid)
        .map(|(&(op, s, n), &(_, s0, n0))| (op, s - s0, n - n0))
        .collect();
    Ok(OpsSplit {
        denoise_s: (at - t0).as_secs_f64(),
        denoise: mid,
        decode_s: (end - at).as_secs_f64(),
        decode,
    })
}

impl OpsSplit {
    pub fn print(&self) {
        println!("  time by operation (one more run, timed per op):");
        for (stage, total, ops) in [
            ("denoiser steps + text", self.denoise_s, &self.denoise),
            ("VAE decode + PNG", self.decode_s, &self.decode),
        ] {
            println!("    {stage:24} {:>9.1} ms", total * 1000.0);
            let mut timed = 0.0;
            for &(op, s, n) in ops {
                if n == 0 {
                    continue;
                }
                timed += s;
                println!(
                    "      {:32} {:>9.1} ms {:>5.1} %  ({n} calls)",
                    op.name(),
                    s * 1000.0,
                    100.0 * s / total
                );
            }
            let other = (total - timed).max(0.0);
            println!(
                "      {:32} {:>9.1} ms {:>5.1} %",
                "other",
                other * 1000.0,
                100.0 * other / total
            );
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let stage = |total: f64, ops: &[(Op, f64, u64)]| {
            serde_json::json!({
                "total_ms": total * 1000.0,
                "ops": ops.iter().map(|(op, s, n)| serde_json::json!({
                    "op": op.name(), "ms": s * 1000.0, "calls": n,
                })).collect::<Vec<_>>(),
            })
        };
        serde_json::json!({
            "denoise": stage(self.denoise_s, &self.denoise),
            "decode": stage(self.decode_s, &self.decode),
        })
    }
}
