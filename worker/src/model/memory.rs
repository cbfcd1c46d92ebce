//! What a loaded model costs in memory, reported by `/v1/info` so a hive can
//! decide where a model fits before sending it work.
//!
//! Weights are counted exactly from the safetensors headers. Working memory is
//! estimated from the configs: with attention computed in full (Candle's CPU
//! and non-flash GPU paths), one generation's peak is the attention scores of
//! the highest-resolution attention block, `[batch, heads, tokens, tokens]`,
//! alive twice (the scores and their softmax), plus the skip connections the
//! UNet keeps for its up blocks; for SD 3's MMDiT, copies of the joint token
//! stream and one group of heads' scores. The VAE decodes afterwards, when the
//! denoiser's memory is free again, so the peak is the larger of the two; a
//! decode that tiles ([`super::vae_tiling`], above the VAE's tile size) costs
//! one tile's working memory plus its output ([`vae_decode_bytes_with`]). For
//! SD 1.5 at 512x512 in f32 with guidance this gives 2.1 GiB against 2.3 GiB
//! measured, for SD 3 Medium at 1024x1024 6.0 GiB against 5.7 GiB
//! (docs/MODELS.md); flash attention on CUDA needs less.

use anyhow::{Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::DType;
use candle_transformers::models::stable_diffusion::{unet_2d, vae};

use super::mmdit::TransformerConfig;
use super::vae_tiling::{self, Tiling, VaeTiling};
use sd_worker_sdk::MemoryEstimate;
use std::path::PathBuf;

/// Floating-point parameters held by these safetensors files.
pub fn parameters(paths: &[PathBuf]) -> Result<u64> {
    // Safety: read-only mappings of model files, as the loader makes them.
    let files =
        unsafe { MmapedSafetensors::multi(paths) }.context("reading safetensors headers")?;
    Ok(files
        .tensors()
        .iter()
        .filter(|(_, view)| DType::try_from(view.dtype()).is_ok_and(|d| d.is_float()))
        .map(|(_, view)| view.shape().iter().product::<usize>() as u64)
        .sum())
}

/// The shape of one generation: latent size, UNet batch, element size.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub latent_height: usize,
    pub latent_width: usize,
    /// Images per UNet call: 2 with classifier-free guidance.
    pub batch: usize,
    pub dtype_bytes: usize,
}

/// Peak working memory of the UNet for one step.
pub fn unet_bytes(cfg: &unet_2d::UNet2DConditionModelConfig, w: Workload) -> u64 {
    let (batch, bytes) = (w.batch as u64, w.dtype_bytes as u64);
    let mut attention = 0;
    let mut skips = 0;
    for (i, block) in cfg.blocks.iter().enumerate() {
        // Every down block but the last halves the resolution.
        let tokens = ((w.latent_height >> i) * (w.latent_width >> i)) as u64;
        skips += batch * block.out_channels as u64 * tokens * (cfg.layers_per_block as u64 + 1);
        if block.use_cross_attn.is_some() && attention == 0 {
            attention = 2 * batch * block.attention_head_dim as u64 * tokens * tokens;
        }
    }
    (attention + skips) * bytes
}

/// Peak working memory of the VAE decoder for one image.
pub fn vae_decode_bytes(cfg: &vae::AutoEncoderKLConfig, w: Workload, scale: usize) -> u64 {
    let bytes = w.dtype_bytes as u64;
    let latent_tokens = (w.latent_height * w.latent_width) as u64;
    let pixels = latent_tokens * (scale * scale) as u64;
    // At full resolution the decoder's last two blocks run (the second-to-last
    // upsamples into it with its own, wider channels): four maps of the wider
    // live at once (input, normalised, convolved, residual); and the mid
    // block's one-head attention over the latent tokens.
    let widest = cfg
        .block_out_channels
        .iter()
        .take(2)
        .max()
        .copied()
        .unwrap_or(0) as u64;
    (4 * widest * pixels + 2 * latent_tokens * latent_tokens) * bytes
}

/// [`vae_decode_bytes`] for a decode that tiles as `mode` and `tiling` say
/// ([`Tiling::tiles_latents`]): when it tiles, the working memory of one
/// tile (at most `tiling.latent_size` latents a side) plus what the tiled
/// decode holds meanwhile ([`vae_tiling::held_bytes`]: two rows of decoded
/// tiles and the output image); otherwise exactly [`vae_decode_bytes`]. The
/// encoder runs the same blocks at the same resolutions with narrower maps
/// at full resolution, so this bounds the encode of an image of that size.
pub fn vae_decode_bytes_with(
    cfg: &vae::AutoEncoderKLConfig,
    w: Workload,
    scale: usize,
    tiling: &Tiling,
    mode: VaeTiling,
) -> u64 {
    if !tiling.tiles_latents(mode, w.latent_height, w.latent_width) {
        return vae_decode_bytes(cfg, w, scale);
    }
    let tile = Workload {
        latent_height: w.latent_height.min(tiling.latent_size),
        latent_width: w.latent_width.min(tiling.latent_size),
        ..w
    };
    vae_decode_bytes(cfg, tile, scale)
        + vae_tiling::held_bytes(tiling, w.latent_height, w.latent_width, w.dtype_bytes)
}

/// Peak working memory of an MMDiT for one step over `context_tokens` text
/// tokens: every block holds a few copies of the joint token stream (input,
/// normalised, q/k/v and their concatenations, attention output) and its 4x
/// MLP; the attention scores go a group of heads at a time (`mmdit.rs` keeps
/// a group near 256 MiB), as scores, f32 scores and probabilities.
pub fn mmdit_bytes(cfg: &TransformerConfig, context_tokens: usize, w: Workload) -> u64 {
    let p = cfg.patch_size.max(1);
    let tokens = ((w.latent_height / p) * (w.latent_width / p) + context_tokens) as u64;
    let (batch, bytes) = (w.batch as u64, w.dtype_bytes as u64);
    let hidden = cfg.hidden_size() as u64;
    let streams = 13 * batch * tokens * hidden * bytes;
    let per_head = batch * tokens * tokens * 4;
    let heads = cfg.num_attention_heads as u64;
    let scores = (heads * per_head).min(per_head.max(256 << 20));
    streams + 3 * scores
}

/// Weights plus the working memory of the denoiser or the VAE, whichever is
/// larger (they run one after the other).
pub fn estimate(parameters: u64, dtype: DType, activations_bytes: u64) -> MemoryEstimate {
    let weights_bytes = parameters * dtype.size_in_bytes() as u64;
    MemoryEstimate {
        weights_bytes,
        activations_bytes,
        total_bytes: weights_bytes + activations_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::shapes::ModelShape;

    const GIB: f64 = (1u64 << 30) as f64;

    /// SD 1.5 at 512x512, f32, guidance: the attention scores of the first
    /// block are 2 x 8 heads x 4096^2 floats (1 GiB), twice; measured peak
    /// working memory on the CPU was 2.29 GiB (docs/MODELS.md).
    #[test]
    fn sd15_estimate_is_close_to_the_measured_peak() {
        let shape = ModelShape::sd15();
        let w = Workload {
            latent_height: 64,
            latent_width: 64,
            batch: 2,
            dtype_bytes: 4,
        };
        let unet = unet_bytes(&shape.unet.to_candle().unwrap(), w) as f64 / GIB;
        assert!((2.0..2.3).contains(&unet), "{unet} GiB");
        let vae = vae_decode_bytes(&shape.vae.to_candle().unwrap(), w, 8) as f64 / GIB;
        assert!(vae < unet, "the UNet sets the peak: vae {vae} GiB");
    }

    #[test]
    fn working_memory_grows_with_the_square_of_the_tokens() {
        let cfg = ModelShape::sd15().unet.to_candle().unwrap();
        let at = |side| Workload {
            latent_height: side,
            latent_width: side,
            batch: 2,
            dtype_bytes: 2,
        };
        let (small, large) = (unet_bytes(&cfg, at(64)), unet_bytes(&cfg, at(128)));
        // Twice the side: 4x the tokens, ~16x the attention scores.
        assert!(large > 14 * small && large < 16 * small, "{small} {large}");
    }

    /// SD 1.5's VAE (512-pixel tiles): at and below 512x512 the estimate
    /// is the untiled one in every mode but `On`; at 2048x2048 `Auto` costs
    /// one tile plus the held pixels, far below the untiled decode.
    #[test]
    fn tiled_vae_decode_is_estimated_at_the_tile() {
        let shape = ModelShape::sd15();
        let cfg = shape.vae.to_candle().unwrap();
        let tiling = Tiling::for_config(&shape.vae, 512).unwrap();
        assert_eq!((tiling.sample_size, tiling.latent_size), (512, 64));
        let at = |side| Workload {
            latent_height: side,
            latent_width: side,
            batch: 2,
            dtype_bytes: 4,
        };
        for side in [32, 64] {
            let plain = vae_decode_bytes(&cfg, at(side), 8);
            for mode in [VaeTiling::Auto, VaeTiling::Off] {
                assert_eq!(
                    vae_decode_bytes_with(&cfg, at(side), 8, &tiling, mode),
                    plain
                );
            }
        }
        let one_tile = vae_decode_bytes(&cfg, at(64), 8) as f64;
        let untiled = vae_decode_bytes(&cfg, at(256), 8) as f64;
        let tiled = vae_decode_bytes_with(&cfg, at(256), 8, &tiling, VaeTiling::Auto) as f64;
        assert!(untiled / GIB > 40.0, "untiled 2048: {} GiB", untiled / GIB);
        assert!(
            tiled > one_tile && tiled < 1.2 * one_tile,
            "tiled 2048: {} GiB, one tile {} GiB",
            tiled / GIB,
            one_tile / GIB
        );
        let off = vae_decode_bytes_with(&cfg, at(256), 8, &tiling, VaeTiling::Off) as f64;
        assert_eq!(off, untiled);
    }

    /// SD 3 Medium without T5, f32, guidance (docs/MODELS.md): working
    /// memory measured as peak minus after-load RSS, 5.7 GiB at 1024x1024
    /// and 1.4-1.6 GiB at 512x512 (two runs); the VAE decode sets the peak
    /// at both sizes.
    #[test]
    fn sd3_medium_estimate_is_close_to_the_measured_peaks() {
        let shape = ModelShape::sd3_medium();
        let mmdit = shape.transformer.as_ref().unwrap();
        let vae_cfg = shape.vae.to_candle().unwrap();
        for (side, measured) in [(128, 5.7), (64, 1.5)] {
            let w = Workload {
                latent_height: side,
                latent_width: side,
                batch: 2,
                dtype_bytes: 4,
            };
            let denoiser = mmdit_bytes(mmdit, 77 + 256, w) as f64 / GIB;
            let vae = vae_decode_bytes(&vae_cfg, w, 8) as f64 / GIB;
            assert!(
                denoiser < vae,
                "{side}: mmdit {denoiser} GiB, vae {vae} GiB"
            );
            let ratio = vae / measured;
            assert!(
                (0.7..1.15).contains(&ratio),
                "{side}: {vae} GiB vs {measured}"
            );
        }
    }
}
