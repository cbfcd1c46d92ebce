//! Writes random-weight ControlNets in diffusers' layout (`config.json` and
//! `diffusion_pytorch_model.safetensors`), loadable by diffusers'
//! `ControlNetModel.from_pretrained` and by [`super::load`].

use anyhow::{Context, Result};
use std::path::Path;

use super::{ControlNet, ControlNetConfig, WEIGHTS_FILE};
use crate::model::generate::{build, save, write_json, WeightInit};

/// Seed stream of ControlNet weights (the model's networks use 1-5), so a
/// ControlNet written with a model's seed still differs from its UNet.
const STREAM: u64 = 6;

/// Writes `cfg` and random weights into `dir` (created if needed).
///
/// Every weight is random, also those diffusers initialises to zero
/// (`controlnet_down_blocks`, `controlnet_mid_block`,
/// `controlnet_cond_embedding.conv_out`): trained ControlNets' are not zero,
/// and zero residuals would make any test of them pass trivially. With
/// [`WeightInit::Seeded`] the files are byte-identical for a seed.
pub fn write_controlnet(dir: &Path, cfg: &ControlNetConfig, init: WeightInit) -> Result<()> {
    cfg.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_json(&dir.join("config.json"), cfg)?;
    let weights = build(init, STREAM, |vb| ControlNet::new(vb, cfg, false).map(drop))?;
    save(weights, &dir.join(WEIGHTS_FILE))
}
