//! The 2-D convolution layer every network here uses: the weights and
//! constructors of `candle_nn::Conv2d` (same tensor names, same shapes), the
//! forward pass through [`crate::kernels::conv2d`] (our CPU f32 kernel;
//! Candle's op elsewhere).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::kernels::conv2d::{conv2d_bias, Conv2dParams};
use crate::kernels::timing::{self, Op};

/// `weight [c_out, c_in / groups, k, k]`, `bias [c_out]`; input
/// `[b, c_in, h, w]`, output `[b, c_out, out_h, out_w]`.
#[derive(Debug, Clone)]
pub struct Conv2d(candle_nn::Conv2d);

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, cfg: Conv2dConfig) -> Self {
        Self(candle_nn::Conv2d::new(weight, bias, cfg))
    }

    pub fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.0.bias()
    }

    pub fn config(&self) -> &Conv2dConfig {
        self.0.config()
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _timed = timing::span(Op::Conv2d);
        let cfg = self.0.config();
        let params = Conv2dParams {
            padding: cfg.padding,
            stride: cfg.stride,
            dilation: cfg.dilation,
        };
        conv2d_bias(x, self.0.weight(), self.0.bias(), params, cfg.groups)
    }
}

/// `weight` and `bias` read from `vb`, as `candle_nn::conv2d`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(Conv2d(candle_nn::conv2d(
        in_channels,
        out_channels,
        kernel_size,
        cfg,
        vb,
    )?))
}

/// `weight` only, as `candle_nn::conv2d_no_bias`.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(Conv2d(candle_nn::conv2d_no_bias(
        in_channels,
        out_channels,
        kernel_size,
        cfg,
        vb,
    )?))
}
