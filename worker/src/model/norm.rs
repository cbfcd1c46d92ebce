//! The GroupNorm layer the UNet, the VAE and the transformer blocks use:
//! `candle_nn::group_norm`'s tensor names and shapes (`weight [c]`,
//! `bias [c]`), computed by [`crate::kernels::group_norm`] (our CPU f32
//! kernel, Candle's ops elsewhere), with the SiLU that usually follows fused
//! in ([`GroupNorm::forward_silu`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::kernels::group_norm::group_norm as group_norm_op;
use crate::kernels::timing::{self, Op};

#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `silu(group_norm(x))` for `x [b, c, ...]`, one pass fewer than the two.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        let _timed = timing::span(Op::GroupNorm);
        group_norm_op(x, self.groups, &self.weight, &self.bias, self.eps, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _timed = timing::span(Op::GroupNorm);
        group_norm_op(x, self.groups, &self.weight, &self.bias, self.eps, false)
    }
}

/// `weight` (ones when generated) and `bias` (zeros) of `channels` read from
/// `vb`, as `candle_nn::group_norm`. Errors: `channels` not a multiple of
/// `groups`, or the tensors missing.
pub fn group_norm(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        candle_core::bail!("GroupNorm: {channels} channels do not split into {groups} groups")
    }
    Ok(GroupNorm {
        weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        groups,
        eps,
    })
}
