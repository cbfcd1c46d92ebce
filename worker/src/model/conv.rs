//! The 2-D convolution layer every network here uses: the weights and
//! constructors of `candle_nn::Conv2d` (same tensor names, same shapes), the
//! forward pass through [`crate::kernels::conv2d`] (our CPU f32 kernel;
//! Candle's op elsewhere), or [`crate::kernels::q8::conv2d`] when the layer
//! was built in a quantising scope ([`super::quant`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::quant::{quantize_layer, SharedQ8};
use crate::kernels::conv2d::{conv2d_bias, Conv2dParams};
use crate::kernels::q8;
use crate::kernels::timing::{self, Op};

/// `weight [c_out, c_in / groups, k, k]`, `bias [c_out]`; input
/// `[b, c_in, h, w]`, output `[b, c_out, out_h, out_w]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: ConvWeight,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
}

#[derive(Debug, Clone)]
enum ConvWeight {
    Dense(Tensor),
    Q8(SharedQ8),
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Self {
        Self {
            weight: ConvWeight::Dense(weight),
            bias,
            cfg,
        }
    }

    /// The dense weight; `None` for an int8 layer.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.weight {
            ConvWeight::Dense(w) => Some(w),
            ConvWeight::Q8(_) => None,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _timed = timing::span(Op::Conv2d);
        let cfg = &self.cfg;
        let params = Conv2dParams {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
        };
        match &self.weight {
            ConvWeight::Dense(w) => conv2d_bias(x, w, self.bias.as_ref(), params, cfg.groups),
            ConvWeight::Q8(w) => {
                let w = w.read().unwrap_or_else(|e| e.into_inner());
                q8::conv2d(x, &w, self.bias.as_ref(), params)
            }
        }
    }
}

/// The layer Candle built (its tensors and init hints), quantised inside a
/// [`super::quant::quantizing`] scope unless grouped.
fn build(dense: candle_nn::Conv2d, vb: &VarBuilder) -> Result<Conv2d> {
    let cfg = *dense.config();
    let quantized = if cfg.groups == 1 {
        quantize_layer(vb, dense.weight())?
    } else {
        None
    };
    Ok(Conv2d {
        weight: match quantized {
            Some(q) => ConvWeight::Q8(q),
            None => ConvWeight::Dense(dense.weight().clone()),
        },
        bias: dense.bias().cloned(),
        cfg,
    })
}

/// `weight` and `bias` read from `vb`, as `candle_nn::conv2d`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let dense = candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb.clone())?;
    build(dense, &vb)
}

/// `weight` only, as `candle_nn::conv2d_no_bias`.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let dense = candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb.clone())?;
    build(dense, &vb)
}
