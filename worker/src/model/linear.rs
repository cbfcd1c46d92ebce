//! The linear layer of the UNet and its blocks: `candle_nn::Linear`'s weights
//! and names (`weight [out, in]`, `bias [out]`), dense or int8
//! ([`super::quant`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::quant::{quantize_layer, SharedQ8};
use crate::kernels::q8;

/// `x [.., in] -> [.., out]`, `y = x W^T + b`.
#[derive(Debug, Clone)]
pub enum Linear {
    Dense(candle_nn::Linear),
    /// int8 weight (per output channel), f32 bias.
    Q8 {
        weight: SharedQ8,
        bias: Option<Tensor>,
    },
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense(l) => l.forward(x),
            Linear::Q8 { weight, bias } => {
                let w = weight.read().unwrap_or_else(|e| e.into_inner());
                q8::linear(x, &w, bias.as_ref())
            }
        }
    }
}

/// The layer Candle built (its tensors and init hints), quantised inside a
/// [`super::quant::quantizing`] scope (the dense layer is then dropped).
fn build(dense: candle_nn::Linear, vb: &VarBuilder) -> Result<Linear> {
    Ok(match quantize_layer(vb, dense.weight())? {
        Some(weight) => Linear::Q8 {
            weight,
            bias: dense.bias().cloned(),
        },
        None => Linear::Dense(dense),
    })
}

/// `weight` and `bias` read from `vb`, as `candle_nn::linear`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    build(candle_nn::linear(in_dim, out_dim, vb.clone())?, &vb)
}

/// `weight` only, as `candle_nn::linear_no_bias`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    build(candle_nn::linear_no_bias(in_dim, out_dim, vb.clone())?, &vb)
}
