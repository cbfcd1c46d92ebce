//! Per-operation wall time, for `sd-worker bench --ops`: the layers that run
//! our kernels (convolution, GroupNorm, attention) add their time here while
//! timing is switched on; everything else in a step (linear layers, the
//! elementwise ops between layers, the scheduler) is the remainder. Off by
//! default: then a span costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The timed kinds of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Conv2d,
    GroupNorm,
    Attention,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Conv2d, Op::GroupNorm, Op::Attention];

    pub fn name(self) -> &'static str {
        match self {
            Op::Conv2d => "convolutions",
            Op::GroupNorm => "group norms (+ SiLU)",
            Op::Attention => "attention (scores, softmax, x v)",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static CALLS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Switches timing on or off and clears the totals.
pub fn enable(on: bool) {
    for i in 0..Op::ALL.len() {
        NANOS[i].store(0, Ordering::Relaxed);
        CALLS[i].store(0, Ordering::Relaxed);
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// `(op, seconds, calls)` since [`enable`].
pub fn totals() -> Vec<(Op, f64, u64)> {
    Op::ALL
        .iter()
        .enumerate()
        .map(|(i, &op)| {
            (
                op,
                NANOS[i].load(Ordering::Relaxed) as f64 / 1e9,
                CALLS[i].load(Ordering::Relaxed),
            )
        })
        .collect()
}

/// Adds the time until it is dropped to `op`'s total (when timing is on).
pub struct Span(Option<(Op, Instant)>);

pub fn span(op: Op) -> Span {
    Span(
        ENABLED
            .load(Ordering::Relaxed)
            .then(|| (op, Instant::now())),
    )
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((op, t0)) = self.0 {
            let i = op as usize;
            NANOS[i].fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            CALLS[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}
