//! The UNet's top level (diffusers' `UNet2DConditionModel`), ours around our
//! blocks ([`super::unet_blocks`], [`super::transformer`]) and Candle's public
//! embeddings. Candle's own top level has no `add_embedding`, so it cannot
//! condition SDXL on the pooled text embedding and the six time ids; it also
//! computes the sinusoidal timestep embedding in the model's dtype, where
//! diffusers computes it in f32 and casts (a timestep near 1000 loses its
//! phase in f16); and its blocks gate the feed-forward with the tanh GELU
//! where diffusers uses the exact one. Weight names follow diffusers, so
//! checkpoints load as they are (Candle's UNet has the same names; see the
//! tests).

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use super::conv::{conv2d, Conv2d};
use super::norm::{group_norm, GroupNorm};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};

use super::config::TextTimeConfig;
use super::unet_blocks::{BlockSettings, CrossAttn, DownBlock, MidBlock, UpBlock};

/// SDXL's extra conditioning, batched like the UNet input.
#[derive(Debug, Clone)]
pub struct TextTime {
    /// Pooled, projected embedding of the second text encoder: [batch, pooled].
    pub text_embeds: Tensor,
    /// `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`: [batch, 6], f32.
    pub time_ids: Tensor,
}

/// What ControlNets add to the UNet's skip connections and mid-block output:
/// diffusers' `down_block_additional_residuals` (one per skip state, in the
/// order the down blocks produce them: `conv_in`'s output first, each
/// [batch, channels, h, w] like the state it is added to) and
/// `mid_block_additional_residual` (like the mid block's output). Several
/// ControlNets' residuals are summed first (`MultiControlNetModel`).
#[derive(Debug, Clone)]
pub struct ControlResiduals {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}

/// `add_time_proj` + `add_embedding` of an SDXL UNet.
#[derive(Debug)]
struct AddEmbedding {
    time_proj: Timesteps,
    embedding: TimestepEmbedding,
    cfg: TextTimeConfig,
}

#[derive(Debug)]
pub struct Unet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add: Option<AddEmbedding>,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    center_input_sample: bool,
}

impl Unet {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        flash_attn: bool,
        cfg: &UNet2DConditionModelConfig,
        text_time: Option<TextTimeConfig>,
    ) -> Result<Self> {
        let blocks = &cfg.blocks;
        let n = blocks.len();
        if n == 0 {
            bail!("unet config: no blocks");
        }
        let base = blocks[0].out_channels;
        let temb = base * 4;
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = conv2d(in_channels, base, 3, pad1, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(base, cfg.flip_sin_to_cos, cfg.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), base, temb)?;
        let add = text_time
            .map(|tt| -> Result<AddEmbedding> {
                Ok(AddEmbedding {
                    time_proj: Timesteps::new(
                        tt.time_embed_dim,
                        cfg.flip_sin_to_cos,
                        cfg.freq_shift,
                    ),
                    embedding: TimestepEmbedding::new(vb.pp("add_embedding"), tt.input_dim, temb)?,
                    cfg: tt,
                })
            })
            .transpose()?;

        let settings = BlockSettings {
            temb_channels: temb,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            context_dim: cfg.cross_attention_dim,
            use_linear_projection: cfg.use_linear_projection,
            flash_attn,
        };
        let attn = |block: &BlockConfig| {
            block.use_cross_attn.map(|depth| CrossAttn {
                heads: block.attention_head_dim,
                depth,
            })
        };
        let mut down = Vec::with_capacity(n);
        for (i, block) in blocks.iter().enumerate() {
            let input = if i == 0 {
                base
            } else {
                blocks[i - 1].out_channels
            };
            down.push(DownBlock::new(
                vb.pp(format!("down_blocks.{i}")),
                input,
                block.out_channels,
                cfg.layers_per_block,
                i + 1 < n,
                cfg.downsample_padding,
                attn(block),
                &settings,
            )?);
        }

        // diffusers gives the mid block the last down block's heads and
        // transformer depth.
        let last = &blocks[n - 1];
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            last.out_channels,
            cfg.mid_block_scale_factor,
            CrossAttn {
                heads: last.attention_head_dim,
                depth: last.use_cross_attn.unwrap_or(1),
            },
            &settings,
        )?;

        // Up block i mirrors down block n-1-i; its skip connections come from
        // the down blocks in reverse, the last one also from conv_in.
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let block = &blocks[n - 1 - i];
            let prev = if i == 0 {
                last.out_channels
            } else {
                blocks[n - i].out_channels
            };
            let skip = blocks[(n - 1 - i).saturating_sub(1)].out_channels;
            up.push(UpBlock::new(
                vb.pp(format!("up_blocks.{i}")),
                skip,
                prev,
                block.out_channels,
                cfg.layers_per_block + 1,
                i + 1 < n,
                attn(block),
                &settings,
            )?);
        }
        let norm_out = group_norm(
            cfg.norm_num_groups,
            base,
            cfg.norm_eps,
            vb.pp("conv_norm_out"),
        )?;
        let conv_out = conv2d(base, out_channels, 3, pad1, vb.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            add,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            center_input_sample: cfg.center_input_sample,
        })
    }

    /// Whether the UNet needs [`TextTime`] conditioning (SDXL).
    pub fn text_time(&self) -> Option<TextTimeConfig> {
        self.add.as_ref().map(|a| a.cfg)
    }

    /// Predicts noise (or v) for `xs` [batch, channels, h, w] at `timestep`,
    /// cross-attending to `context` [batch, tokens, dim]; with `residuals`,
    /// adds them to the skip connections and the mid block's output as
    /// diffusers' `UNet2DConditionModel.forward` does.
    ///
    /// Errors: SDXL conditioning missing or of the wrong width; residuals
    /// that do not match the skip connections in number or shape.
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        text_time: Option<&TextTime>,
        residuals: Option<&ControlResiduals>,
    ) -> Result<Tensor> {
        let (batch, _, h, w) = xs.dims4()?;
        let dtype = xs.dtype();
        let device = xs.device();

        // Sinusoidal embeddings in f32, then the model's dtype (as diffusers).
        let t = Tensor::full(timestep as f32, batch, device)?;
        let t_emb = self.time_proj.forward(&t)?.to_dtype(dtype)?;
        let mut emb = self.time_embedding.forward(&t_emb)?;
        match (&self.add, text_time) {
            (Some(add), Some(tt)) => {
                let ids = tt.time_ids.to_dtype(DType::F32)?.flatten_all()?;
                let time_embeds = add.time_proj.forward(&ids)?.reshape((batch, ()))?;
                let add_embeds =
                    Tensor::cat(&[&tt.text_embeds.to_dtype(DType::F32)?, &time_embeds], 1)?;
                if add_embeds.dim(1)? != add.cfg.input_dim {
                    bail!(
                        "unet add_embedding takes {} values, got {} (pooled text + 6 time ids)",
                        add.cfg.input_dim,
                        add_embeds.dim(1)?
                    );
                }
                emb = (emb + add.embedding.forward(&add_embeds.to_dtype(dtype)?)?)?;
            }
            (Some(_), None) => bail!("this UNet needs the pooled text embedding and time ids"),
            (None, _) => {}
        }

        let xs = if self.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let mut xs = self.conv_in.forward(&xs)?;
        let mut skips = vec![xs.clone()];
        for block in &self.down {
            let (out, res) = block.forward(&xs, &emb, context)?;
            skips.extend(res);
            xs = out;
        }
        xs = self.mid.forward(&xs, &emb, context)?;
        if let Some(r) = residuals {
            if r.down.len() != skips.len() {
                bail!(
                    "controlnet residuals: {} for {} unet skip connections",
                    r.down.len(),
                    skips.len()
                );
            }
            for (skip, add) in skips.iter_mut().zip(&r.down) {
                *skip = (&*skip + add)?;
            }
            xs = (xs + &r.mid)?;
        }

        // Sizes that do not divide by every downsampling need explicit
        // upsample targets: the size of the skip connection that follows.
        let factor = 1usize << (self.up.len() - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        for (i, block) in self.up.iter().enumerate() {
            let res = skips.split_off(skips.len() - block.skips());
            let upsample_size = match skips.last() {
                Some(next) if odd_size && i + 1 < self.up.len() => {
                    let (_, _, sh, sw) = next.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            xs = block.forward(&xs, &res, &emb, upsample_size, context)?;
        }
        let xs = self.norm_out.forward_silu(&xs)?;
        Ok(self.conv_out.forward(&xs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::PerBlock;
    use crate::model::shapes::ModelShape;
    use candle_core::{Device, Shape};
    use candle_nn::var_builder::SimpleBackend;
    use candle_nn::VarMap;
    use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use crate::model::test_util::max_diff;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
    }

    /// Records the name and shape of every weight asked for and hands back a
    /// broadcast zero (no memory), so full-size UNets build in an instant.
    struct Recorder<'a>(&'a Mutex<BTreeMap<String, Vec<usize>>>);

    impl SimpleBackend for Recorder<'_> {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            let prev = self
                .0
                .lock()
                .unwrap()
                .insert(name.to_string(), s.dims().to_vec());
            assert!(prev.is_none(), "{name} asked for twice");
            Tensor::zeros((), dtype, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("{name}: no shape given")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            false
        }
    }

    fn weights(build: impl FnOnce(VarBuilder)) -> BTreeMap<String, Vec<usize>> {
        let names = Mutex::new(BTreeMap::new());
        build(VarBuilder::from_backend(
            Box::new(Recorder(&names)),
            DType::F32,
            Device::Cpu,
        ));
        names.into_inner().unwrap()
    }

    /// Our blocks ask for Candle's UNet weights, name for name and shape for
    /// shape (so every checkpoint that loaded still loads), SDXL's
    /// add_embedding besides: at toy and at full size, SD 1.5's, SD 2.x's
    /// (linear projections, 5-20 heads, 1024-wide context) and SDXL's (2 and
    /// 10 transformer layers). The output is checked against diffusers'
    /// (`unet_reference_tests.rs`, `pipeline/reference_tests.rs`).
    #[test]
    fn asks_for_the_weights_of_candles_unet_at_every_size() {
        let mut sd2 = ModelShape::sd15().unet;
        sd2.use_linear_projection = true;
        sd2.attention_head_dim = PerBlock::Each(vec![5, 10, 20, 20]);
        sd2.cross_attention_dim = PerBlock::All(1024);
        let configs = [
            ModelShape::tiny().unet,
            ModelShape::tiny_sd2().unet,
            ModelShape::tiny_sdxl().unet,
            ModelShape::sd15().unet,
            sd2,
            ModelShape::sdxl().unet,
        ];
        for unet in configs {
            let cfg = unet.to_candle().unwrap();
            let tt = unet.text_time().unwrap();
            let ours = weights(|vb| {
                Unet::new(vb, 4, 4, false, &cfg, tt).unwrap();
            });
            let theirs = weights(|vb| {
                UNet2DConditionModel::new(vb, 4, 4, false, cfg.clone()).unwrap();
            });
            let (extra, same): (BTreeMap<_, _>, BTreeMap<_, _>) = ours
                .into_iter()
                .partition(|(name, _)| name.starts_with("add_embedding."));
            assert!(same == theirs, "{:?}", unet.block_out_channels);
            assert_eq!(!extra.is_empty(), tt.is_some());
        }
    }

    /// Sizes that do not halve evenly take the skip connections' sizes.
    #[test]
    fn odd_sizes_come_out_at_their_size() {
        let cfg = ModelShape::tiny().unet.to_candle().unwrap();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let unet = Unet::new(vb, 4, 4, false, &cfg, None).unwrap();
        let ctx = randn(&[1, 77, cfg.cross_attention_dim]);
        for (h, w) in [(9, 13), (5, 7), (16, 16)] {
            let out = unet
                .forward(&randn(&[1, 4, h, w]), 981.0, &ctx, None, None)
                .unwrap();
            assert_eq!(out.dims(), [1, 4, h, w]);
        }
    }

    /// SDXL: the pooled embedding and every time id reach the output; a UNet
    /// that needs them refuses to run without them.
    #[test]
    fn text_time_conditioning_reaches_the_output() {
        let shape = ModelShape::tiny_sdxl();
        let cfg = shape.unet.to_candle().unwrap();
        let tt = shape.unet.text_time().unwrap().unwrap();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let unet = Unet::new(vb, 4, 4, false, &cfg, Some(tt)).unwrap();
        assert!(vm
            .data()
            .lock()
            .unwrap()
            .contains_key("add_embedding.linear_1.weight"));
        let pooled = tt.input_dim - 6 * tt.time_embed_dim;
        let x = randn(&[1, 4, 16, 16]);
        let ctx = randn(&[1, 77, cfg.cross_attention_dim]);
        let cond = |text: &Tensor, ids: [f32; 6]| TextTime {
            text_embeds: text.clone(),
            time_ids: Tensor::new(&[ids], &Device::Cpu).unwrap(),
        };
        let text = randn(&[1, pooled]);
        let base = cond(&text, [64., 64., 0., 0., 64., 64.]);
        let out = unet.forward(&x, 500.0, &ctx, Some(&base), None).unwrap();
        // Deterministic: any difference below comes from the changed input
        // (random-init layers make it small, but never exactly zero).
        let again = unet.forward(&x, 500.0, &ctx, Some(&base), None).unwrap();
        assert_eq!(max_diff(&out, &again), 0.0);
        for i in 0..6 {
            let mut ids = [64., 64., 0., 0., 64., 64.];
            ids[i] += 16.0;
            let other = unet
                .forward(&x, 500.0, &ctx, Some(&cond(&text, ids)), None)
                .unwrap();
            let d = max_diff(&out, &other);
            assert!(d > 0.0, "time id {i} is ignored");
        }
        let other_text = cond(&randn(&[1, pooled]), [64., 64., 0., 0., 64., 64.]);
        let other = unet
            .forward(&x, 500.0, &ctx, Some(&other_text), None)
            .unwrap();
        assert!(
            max_diff(&out, &other) > 0.0,
            "the pooled embedding is ignored"
        );
        assert!(unet.forward(&x, 500.0, &ctx, None, None).is_err());
    }
}
