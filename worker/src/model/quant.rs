//! Load-time weight quantisation (`--dtype q8`, issue 20): which layers get
//! int8 weights ([`crate::kernels::q8`]) and the scope their constructors read.
//!
//! The loader builds a network inside [`quantizing`] with that network's
//! [`WeightTable`]; every [`super::linear::Linear`] and
//! [`super::conv::Conv2d`] built in the scope reads its f32 weight as usual,
//! quantises it at once and records the int8 weight in the table in place of
//! the f32 one, which is then freed: the f32 network is never resident as a
//! whole, so loading peaks at one layer's f32 weight over the int8 model.
//! Outside the scope (the VAE, the text encoders, ControlNets) layers keep
//! their dense weights.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::cell::RefCell;
use std::sync::{Arc, RwLock};

use super::weights::WeightTable;
use crate::kernels::q8::{Isa, Q8Weight};

/// The weight format a network is loaded in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightQuant {
    /// The model dtype's dense tensors.
    #[default]
    Dense,
    /// int8 per output channel, int8 activations per token / pixel (CPU only).
    Q8,
}

/// An int8 weight shared by its layer and the [`WeightTable`] (LoRA merging
/// replaces its contents).
pub type SharedQ8 = Arc<RwLock<Q8Weight>>;

thread_local! {
    static SCOPE: RefCell<Option<Arc<WeightTable>>> = const { RefCell::new(None) };
}

/// Runs `build` with every layer it constructs on this thread quantised and
/// recorded in `table`; the scope ends with `build`, panics included.
pub fn quantizing<T>(table: &Arc<WeightTable>, build: impl FnOnce() -> T) -> T {
    struct Reset(Option<Arc<WeightTable>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = SCOPE.with(|s| s.borrow_mut().replace(table.clone()));
    let _reset = Reset(previous);
    build()
}

/// Logs which int8 kernel this CPU runs; a warning where it is the plain Rust
/// one, about 5x slower than f32 (no AVX2: `q8` then only saves memory).
pub fn log_kernel() {
    let isa = Isa::detect();
    if isa == Isa::Portable {
        tracing::warn!(
            kernel = isa.name(),
            "q8: this CPU has neither AVX-512 VNNI nor AVX2; the int8 layers run in plain Rust, several times slower than f32 (q8 still saves memory)"
        );
    } else {
        tracing::info!(kernel = isa.name(), "q8: int8 kernels");
    }
}

/// `weight` (read from `vb` as `<prefix>.weight`) as a shared int8 weight,
/// recorded in the scope's table, when a [`quantizing`] scope is open and the
/// weight is an f32 CPU tensor the kernel takes ([`Q8Weight::fits`]);
/// `None` otherwise (the layer stays dense).
pub(crate) fn quantize_layer(
    vb: &VarBuilder,
    weight: &Tensor,
) -> candle_core::Result<Option<SharedQ8>> {
    let Some(table) = SCOPE.with(|s| s.borrow().clone()) else {
        return Ok(None);
    };
    if !matches!(weight.device(), Device::Cpu)
        || weight.dtype() != DType::F32
        || !Q8Weight::fits(weight.dims())
    {
        return Ok(None);
    }
    let shared = Arc::new(RwLock::new(Q8Weight::quantize(weight)?));
    table.record_quantized(&format!("{}.weight", vb.prefix()), shared.clone());
    Ok(Some(shared))
}
