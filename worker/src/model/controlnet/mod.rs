//! ControlNet (diffusers' `ControlNetModel`): a copy of the UNet's down and
//! mid blocks that also sees a control image (edges, depth, pose...) and
//! returns what to add to the UNet's skip connections and mid-block output
//! ([`ControlResiduals`], which `Unet::forward` takes). Built from the UNet's
//! own blocks ([`DownBlock`], [`MidBlock`]); weight names are diffusers', so
//! published ControlNets load as they are. [`config`] reads their
//! `config.json`, [`generate`] writes random-weight ones for tests.

pub mod config;
pub mod generate;
#[cfg(test)]
mod reference_tests;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::model::conv::{conv2d, Conv2d};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::BlockConfig;
use std::path::{Path, PathBuf};

use super::config::{read_json, TextTimeConfig};
use super::memory::{self, Workload};
use super::unet::{ControlResiduals, TextTime};
use super::unet_blocks::{BlockSettings, CrossAttn, DownBlock, MidBlock};
pub use config::ControlNetConfig;

/// The weights file diffusers saves a ControlNet to.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// `controlnet_cond_embedding` (diffusers' `ControlNetConditioningEmbedding`):
/// a 3x3 conv, then per further stage a 3x3 conv and a stride-2 3x3 conv,
/// SiLU after each, and a 3x3 conv out to the UNet's first width.
#[derive(Debug)]
struct CondEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl CondEmbedding {
    fn new(vb: VarBuilder, in_channels: usize, widths: &[usize], out: usize) -> Result<Self> {
        let pad = |stride| Conv2dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let conv_in = conv2d(in_channels, widths[0], 3, pad(1), vb.pp("conv_in"))?;
        let mut blocks = Vec::with_capacity(2 * widths.len());
        for (i, pair) in widths.windows(2).enumerate() {
            let b = vb.pp("blocks");
            blocks.push(conv2d(pair[0], pair[0], 3, pad(1), b.pp(2 * i))?);
            blocks.push(conv2d(pair[0], pair[1], 3, pad(2), b.pp(2 * i + 1))?);
        }
        let last = *widths.last().expect("non-empty widths");
        let conv_out = conv2d(last, out, 3, pad(1), vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            blocks,
            conv_out,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = candle_nn::ops::silu(&self.conv_in.forward(xs)?)?;
        for conv in &self.blocks {
            xs = candle_nn::ops::silu(&conv.forward(&xs)?)?;
        }
        Ok(self.conv_out.forward(&xs)?)
    }
}

/// A ControlNet on its device, ready for [`ControlNet::forward`].
#[derive(Debug)]
pub struct ControlNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add: Option<(Timesteps, TimestepEmbedding, TextTimeConfig)>,
    cond_embedding: CondEmbedding,
    down: Vec<DownBlock>,
    mid: MidBlock,
    /// `controlnet_down_blocks`: a 1x1 conv per skip state.
    zero_down: Vec<Conv2d>,
    /// `controlnet_mid_block`.
    zero_mid: Conv2d,
    in_channels: usize,
    conditioning_channels: usize,
    bgr: bool,
    global_pool: bool,
}

impl ControlNet {
    /// Builds the network from `vb` (diffusers' names) as
    /// `ControlNetModel.__init__` lays it out; errors for configs
    /// [`ControlNetConfig::validate`] refuses and for missing or misshapen
    /// weights.
    pub fn new(vb: VarBuilder, cfg: &ControlNetConfig, flash_attn: bool) -> Result<Self> {
        let (unet, text_time) = cfg.to_candle()?;
        let blocks = &unet.blocks;
        let n = blocks.len();
        let base = blocks[0].out_channels;
        let temb = base * 4;
        let conv_cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(cfg.in_channels, base, 3, conv_cfg, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(base, unet.flip_sin_to_cos, unet.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), base, temb)?;
        let add = text_time
            .map(|tt| -> Result<_> {
                Ok((
                    Timesteps::new(tt.time_embed_dim, unet.flip_sin_to_cos, unet.freq_shift),
                    TimestepEmbedding::new(vb.pp("add_embedding"), tt.input_dim, temb)?,
                    tt,
                ))
            })
            .transpose()?;
        let cond_embedding = CondEmbedding::new(
            vb.pp("controlnet_cond_embedding"),
            cfg.conditioning_channels,
            &cfg.conditioning_embedding_out_channels,
            base,
        )?;

        let settings = BlockSettings {
            temb_channels: temb,
            groups: unet.norm_num_groups,
            eps: unet.norm_eps,
            context_dim: unet.cross_attention_dim,
            use_linear_projection: unet.use_linear_projection,
            flash_attn,
        };
        let attn = |block: &BlockConfig| {
            block.use_cross_attn.map(|depth| CrossAttn {
                heads: block.attention_head_dim,
                depth,
            })
        };
        let zero = |vb: VarBuilder, channels| conv2d(channels, channels, 1, Default::default(), vb);
        let zvb = vb.pp("controlnet_down_blocks");
        let mut zero_down = vec![zero(zvb.pp(0), base)?];
        let mut down = Vec::with_capacity(n);
        for (i, block) in blocks.iter().enumerate() {
            let input = if i == 0 {
                base
            } else {
                blocks[i - 1].out_channels
            };
            let last = i + 1 == n;
            down.push(DownBlock::new(
                vb.pp(format!("down_blocks.{i}")),
                input,
                block.out_channels,
                unet.layers_per_block,
                !last,
                unet.downsample_padding,
                attn(block),
                &settings,
            )?);
            let states = unet.layers_per_block + usize::from(!last);
            for _ in 0..states {
                let k = zero_down.len();
                zero_down.push(zero(zvb.pp(k), block.out_channels)?);
            }
        }
        // As the UNet's: the last down block's heads and transformer depth.
        let last = &blocks[n - 1];
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            last.out_channels,
            unet.mid_block_scale_factor,
            CrossAttn {
                heads: last.attention_head_dim,
                depth: last.use_cross_attn.unwrap_or(1),
            },
            &settings,
        )?;
        let zero_mid = zero(vb.pp("controlnet_mid_block"), last.out_channels)?;
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            add,
            cond_embedding,
            down,
            mid,
            zero_down,
            zero_mid,
            in_channels: cfg.in_channels,
            conditioning_channels: cfg.conditioning_channels,
            bgr: cfg.controlnet_conditioning_channel_order == "bgr",
            global_pool: cfg.global_pool_conditions,
        })
    }

    /// Whether the ControlNet needs [`TextTime`] conditioning (SDXL).
    pub fn text_time(&self) -> Option<TextTimeConfig> {
        self.add.as_ref().map(|a| a.2)
    }

    /// The residuals for one UNet call, as diffusers' `ControlNetModel.forward`
    /// computes them (without `guess_mode`).
    ///
    /// - `sample`: [batch, in_channels, h, w], the scaled model input the
    ///   UNet gets at this step (its latent channels only, also for
    ///   inpainting UNets);
    /// - `timestep`, `context` [batch, tokens, cross_attention_dim] and
    ///   `text_time` (SDXL): as the UNet gets them;
    /// - `control`: [batch, conditioning_channels, p*h, p*w], the control
    ///   image in [0, 1], `p` = [`ControlNetConfig::pixels_per_latent`] (8);
    ///   reversed channels first for `bgr` ControlNets;
    /// - `conditioning_scale`: every residual is multiplied by it.
    ///
    /// The time embedding is computed in f32 and cast to the sample's dtype,
    /// as the UNet's. With `global_pool_conditions` each residual is its mean
    /// over height and width, broadcast back to the full size (what diffusers'
    /// [batch, channels, 1, 1] adds to).
    ///
    /// Errors: sizes or batches that do not match, SDXL conditioning missing
    /// or of the wrong width.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        text_time: Option<&TextTime>,
        control: &Tensor,
        conditioning_scale: f64,
    ) -> Result<ControlResiduals> {
        let (batch, channels, h, w) = sample.dims4().context("controlnet sample")?;
        let (cb, cc, ch, cw) = control.dims4().context("controlnet control image")?;
        ensure!(
            channels == self.in_channels,
            "controlnet: the sample has {channels} channels, the ControlNet takes {}",
            self.in_channels
        );
        ensure!(
            cb == batch && cc == self.conditioning_channels,
            "controlnet: control image [{cb}, {cc}, ..] for a batch of {batch} (needs [{batch}, {}, ..])",
            self.conditioning_channels
        );
        let dtype = sample.dtype();
        let device = sample.device();

        let t = Tensor::full(timestep as f32, batch, device)?;
        let t_emb = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let mut emb = self.time_embedding.forward(&t_emb)?;
        match (&self.add, text_time) {
            (Some((proj, embedding, cfg)), Some(tt)) => {
                let ids = tt.time_ids.to_dtype(DType::F32)?.flatten_all()?;
                let time_embeds = proj.forward(&ids)?.reshape((batch, ()))?;
                let add = Tensor::cat(&[&tt.text_embeds.to_dtype(DType::F32)?, &time_embeds], 1)?;
                ensure!(
                    add.dim(1)? == cfg.input_dim,
                    "controlnet add_embedding takes {} values, got {} (pooled text + 6 time ids)",
                    cfg.input_dim,
                    add.dim(1)?
                );
                emb = (emb + embedding.forward(&add.to_dtype(dtype)?)?)?;
            }
            (Some(_), None) => {
                bail!("this ControlNet needs the pooled text embedding and time ids")
            }
            (None, _) => {}
        }

        let control = if self.bgr {
            let rev: Vec<u32> = (0..cc as u32).rev().collect();
            control.index_select(&Tensor::new(rev, device)?, 1)?
        } else {
            control.clone()
        };
        let cond = self.cond_embedding.forward(&control.to_dtype(dtype)?)?;
        let (_, _, eh, ew) = cond.dims4()?;
        ensure!(
            (eh, ew) == (h, w),
            "controlnet: a {ch}x{cw} control image embeds to {eh}x{ew}, the latents are {h}x{w} (the image must be {} times their size)",
            1usize << (self.cond_embedding.blocks.len() / 2)
        );
        let mut xs = (self.conv_in.forward(sample)? + cond)?;
        let mut states = vec![xs.clone()];
        for block in &self.down {
            let (out, res) = block.forward(&xs, &emb, context)?;
            states.extend(res);
            xs = out;
        }
        let xs = self.mid.forward(&xs, &emb, context)?;

        let finish = |conv: &Conv2d, state: &Tensor| -> Result<Tensor> {
            let r = (conv.forward(state)? * conditioning_scale)?;
            if self.global_pool {
                let shape = r.shape().clone();
                Ok(r.mean_keepdim(3)?.mean_keepdim(2)?.broadcast_as(shape)?)
            } else {
                Ok(r)
            }
        };
        ensure!(
            states.len() == self.zero_down.len(),
            "controlnet: {} skip states for {} controlnet_down_blocks",
            states.len(),
            self.zero_down.len()
        );
        let down = self
            .zero_down
            .iter()
            .zip(&states)
            .map(|(conv, s)| finish(conv, s))
            .collect::<Result<Vec<_>>>()?;
        let mid = finish(&self.zero_mid, &xs)?;
        Ok(ControlResiduals { down, mid })
    }
}

/// A ControlNet folder as diffusers saves it: its config and weights
/// (`diffusion_pytorch_model.safetensors`, or the `.fp16` variant when that
/// is all there is).
pub fn files_in(dir: &Path) -> Result<(ControlNetConfig, PathBuf)> {
    let cfg: ControlNetConfig = read_json(&dir.join("config.json"))?;
    cfg.validate()?;
    let weights = [WEIGHTS_FILE, "diffusion_pytorch_model.fp16.safetensors"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .with_context(|| format!("{}: no {WEIGHTS_FILE}", dir.display()))?;
    Ok((cfg, weights))
}

/// Loads the ControlNet in `dir` ([`files_in`]) in `dtype` on `device`.
pub fn load(
    dir: &Path,
    dtype: DType,
    device: &Device,
    flash_attn: bool,
) -> Result<(ControlNetConfig, ControlNet)> {
    let (cfg, weights) = files_in(dir)?;
    // SAFETY: read-only mapping of a model file, as the model loader makes them.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, device)? };
    let net = ControlNet::new(vb, &cfg, flash_attn)
        .with_context(|| format!("building the ControlNet in {}", dir.display()))?;
    Ok((cfg, net))
}

/// Bytes the ControlNet's weights take in `dtype`, counted from the files
/// as `memory::parameters` counts the model's.
pub fn weights_bytes(files: &[PathBuf], dtype: DType) -> Result<u64> {
    Ok(memory::parameters(files)? * dtype.size_in_bytes() as u64)
}

/// Peak working memory of one ControlNet call (in the manner of
/// `memory::unet_bytes`): the attention scores of its highest-resolution
/// attention block, twice (scores and softmax), the residuals it returns
/// (alive through the UNet call that follows: the UNet's skip connections
/// over again), and two maps of the conditioning embedding's widest stage at
/// the control image's resolution of that stage.
pub fn controlnet_working_bytes(cfg: &ControlNetConfig, w: Workload) -> u64 {
    let Ok((unet, _)) = cfg.to_candle() else {
        return 0;
    };
    let (batch, bytes) = (w.batch as u64, w.dtype_bytes as u64);
    let scale = cfg.pixels_per_latent();
    let embedding = cfg
        .conditioning_embedding_out_channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let side = scale >> i;
            2 * *c as u64 * (w.latent_height * w.latent_width * side * side) as u64
        })
        .max()
        .unwrap_or(0);
    memory::unet_bytes(&unet, w) + batch * embedding * bytes
}

#[cfg(test)]
mod tests;
