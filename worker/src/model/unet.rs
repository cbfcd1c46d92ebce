//! The UNet's top level (diffusers' `UNet2DConditionModel`), ours around
//! Candle's public blocks. Candle's own top level has no `add_embedding`, so
//! it cannot condition SDXL on the pooled text embedding and the six time ids;
//! it also computes the sinusoidal timestep embedding in the model's dtype,
//! where diffusers computes it in f32 and casts (a timestep near 1000 loses
//! its phase in f16). Weight names follow diffusers, so checkpoints load as
//! they are; for SD 1.x/2.x the output equals Candle's (see the tests).

use anyhow::{bail, Result};
use candle_core::{DType, Module, Tensor};
use candle_nn::{conv2d, group_norm, Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModelConfig;
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D, CrossAttnUpBlock2DConfig,
    DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn, UNetMidBlock2DCrossAttnConfig,
    UpBlock2D, UpBlock2DConfig,
};

use super::config::TextTimeConfig;

/// SDXL's extra conditioning, batched like the UNet input.
#[derive(Debug, Clone)]
pub struct TextTime {
    /// Pooled, projected embedding of the second text encoder: [batch, pooled].
    pub text_embeds: Tensor,
    /// `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`: [batch, 6], f32.
    pub time_ids: Tensor,
}

#[derive(Debug)]
enum Down {
    Plain(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

#[derive(Debug)]
enum Up {
    Plain(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
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
    down: Vec<Down>,
    mid: UNetMidBlock2DCrossAttn,
    up: Vec<Up>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    center_input_sample: bool,
    /// ResNets per up block (diffusers: layers_per_block + 1).
    up_resnets: usize,
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

        let mut down = Vec::with_capacity(n);
        for (i, block) in blocks.iter().enumerate() {
            let input = if i == 0 {
                base
            } else {
                blocks[i - 1].out_channels
            };
            let plain = DownBlock2DConfig {
                num_layers: cfg.layers_per_block,
                resnet_eps: cfg.norm_eps,
                resnet_groups: cfg.norm_num_groups,
                add_downsample: i + 1 < n,
                downsample_padding: cfg.downsample_padding,
                ..Default::default()
            };
            let vb = vb.pp(format!("down_blocks.{i}"));
            down.push(match block.use_cross_attn {
                Some(layers) => Down::CrossAttn(CrossAttnDownBlock2D::new(
                    vb,
                    input,
                    block.out_channels,
                    Some(temb),
                    flash_attn,
                    CrossAttnDownBlock2DConfig {
                        downblock: plain,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: cfg.cross_attention_dim,
                        sliced_attention_size: None,
                        use_linear_projection: cfg.use_linear_projection,
                        transformer_layers_per_block: layers,
                    },
                )?),
                None => Down::Plain(DownBlock2D::new(
                    vb,
                    input,
                    block.out_channels,
                    Some(temb),
                    plain,
                )?),
            });
        }

        // diffusers gives the mid block the last down block's transformer depth.
        let last = blocks[n - 1];
        let mid = UNetMidBlock2DCrossAttn::new(
            vb.pp("mid_block"),
            last.out_channels,
            Some(temb),
            flash_attn,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: cfg.norm_eps,
                output_scale_factor: cfg.mid_block_scale_factor,
                cross_attn_dim: cfg.cross_attention_dim,
                attn_num_head_channels: last.attention_head_dim,
                resnet_groups: Some(cfg.norm_num_groups),
                use_linear_projection: cfg.use_linear_projection,
                transformer_layers_per_block: last.use_cross_attn.unwrap_or(1),
                sliced_attention_size: None,
                ..Default::default()
            },
        )?;

        // Up block i mirrors down block n-1-i; its skip connections come from
        // the down blocks in reverse, the last one also from conv_in.
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let block = blocks[n - 1 - i];
            let prev = if i == 0 {
                last.out_channels
            } else {
                blocks[n - i].out_channels
            };
            let skip = blocks[(n - 1 - i).saturating_sub(1)].out_channels;
            let plain = UpBlock2DConfig {
                num_layers: cfg.layers_per_block + 1,
                resnet_eps: cfg.norm_eps,
                resnet_groups: cfg.norm_num_groups,
                add_upsample: i + 1 < n,
                ..Default::default()
            };
            let vb = vb.pp(format!("up_blocks.{i}"));
            up.push(match block.use_cross_attn {
                Some(layers) => Up::CrossAttn(CrossAttnUpBlock2D::new(
                    vb,
                    skip,
                    prev,
                    block.out_channels,
                    Some(temb),
                    flash_attn,
                    CrossAttnUpBlock2DConfig {
                        upblock: plain,
                        attn_num_head_channels: block.attention_head_dim,
                        cross_attention_dim: cfg.cross_attention_dim,
                        sliced_attention_size: None,
                        use_linear_projection: cfg.use_linear_projection,
                        transformer_layers_per_block: layers,
                    },
                )?),
                None => Up::Plain(UpBlock2D::new(
                    vb,
                    skip,
                    prev,
                    block.out_channels,
                    Some(temb),
                    plain,
                )?),
            });
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
            up_resnets: cfg.layers_per_block + 1,
        })
    }

    /// Whether the UNet needs [`TextTime`] conditioning (SDXL).
    pub fn text_time(&self) -> Option<TextTimeConfig> {
        self.add.as_ref().map(|a| a.cfg)
    }

    /// Predicts noise (or v) for `xs` [batch, channels, h, w] at `timestep`,
    /// cross-attending to `context` [batch, tokens, dim].
    pub fn forward(
        &self,
        xs: &Tensor,
        timestep: f64,
        context: &Tensor,
        text_time: Option<&TextTime>,
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
            let (out, res) = match block {
                Down::Plain(b) => b.forward(&xs, Some(&emb))?,
                Down::CrossAttn(b) => b.forward(&xs, Some(&emb), Some(context))?,
            };
            skips.extend(res);
            xs = out;
        }
        xs = self.mid.forward(&xs, Some(&emb), Some(context))?;

        // Sizes that do not divide by every downsampling need explicit
        // upsample targets: the size of the skip connection that follows.
        let factor = 1usize << (self.up.len() - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        for (i, block) in self.up.iter().enumerate() {
            let res = skips.split_off(skips.len() - self.up_resnets);
            let upsample_size = match skips.last() {
                Some(next) if odd_size && i + 1 < self.up.len() => {
                    let (_, _, sh, sw) = next.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            xs = match block {
                Up::Plain(b) => b.forward(&xs, &res, Some(&emb), upsample_size)?,
                Up::CrossAttn(b) => {
                    b.forward(&xs, &res, Some(&emb), upsample_size, Some(context))?
                }
            };
        }
        let xs = candle_nn::ops::silu(&self.norm_out.forward(&xs)?)?;
        Ok(self.conv_out.forward(&xs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::shapes::ModelShape;
    use candle_core::Device;
    use candle_nn::VarMap;
    use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;

    use crate::model::test_util::max_diff;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
    }

    /// For SD 1.x/2.x shapes, our top level is Candle's, weight for weight:
    /// the same names and the same output, also at a size that needs explicit
    /// upsample targets.
    #[test]
    fn equals_candles_unet_without_text_time() {
        for shape in [ModelShape::tiny(), ModelShape::tiny_sd2()] {
            let cfg = shape.unet.to_candle().unwrap();
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let ours = Unet::new(vb.clone(), 4, 4, false, &cfg, None).unwrap();
            let names = vm.data().lock().unwrap().len();
            let theirs = UNet2DConditionModel::new(vb, 4, 4, false, cfg).unwrap();
            assert_eq!(
                vm.data().lock().unwrap().len(),
                names,
                "no weight of its own"
            );
            let ctx = randn(&[2, 77, 32]);
            for (h, w) in [(16, 16), (10, 14)] {
                let x = randn(&[2, 4, h, w]);
                let a = ours.forward(&x, 981.0, &ctx, None).unwrap();
                let b = theirs.forward(&x, 981.0, &ctx).unwrap();
                assert_eq!(a.dims(), [2, 4, h, w]);
                assert!(max_diff(&a, &b) < 1e-5, "{} {h}x{w}", shape.name);
            }
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
        let out = unet.forward(&x, 500.0, &ctx, Some(&base)).unwrap();
        // Deterministic: any difference below comes from the changed input
        // (random-init layers make it small, but never exactly zero).
        let again = unet.forward(&x, 500.0, &ctx, Some(&base)).unwrap();
        assert_eq!(max_diff(&out, &again), 0.0);
        for i in 0..6 {
            let mut ids = [64., 64., 0., 0., 64., 64.];
            ids[i] += 16.0;
            let other = unet
                .forward(&x, 500.0, &ctx, Some(&cond(&text, ids)))
                .unwrap();
            let d = max_diff(&out, &other);
            assert!(d > 0.0, "time id {i} is ignored");
        }
        let other_text = cond(&randn(&[1, pooled]), [64., 64., 0., 0., 64., 64.]);
        let other = unet.forward(&x, 500.0, &ctx, Some(&other_text)).unwrap();
        assert!(
            max_diff(&out, &other) > 0.0,
            "the pooled embedding is ignored"
        );
        assert!(unet.forward(&x, 500.0, &ctx, None).is_err());
    }
}
