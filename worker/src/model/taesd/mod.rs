//! TAESD, the tiny distilled autoencoder of Stable Diffusion's latents
//! (diffusers' `AutoencoderTiny`, autoencoder_tiny.py, with `EncoderTiny` and
//! `DecoderTiny` of vae.py): `madebyollin/taesd` (SD 1/2) and `taesdxl`
//! (SDXL) over 4 latent channels, `taesd3` (SD 3) and `taef1` over 16. A
//! few convolutions wide, it decodes in a fraction of the full VAE's time
//! and memory: live previews, fast drafts.
//!
//! Built from a diffusers folder ([`Taesd::load`]: `config.json` and
//! `diffusion_pytorch_model[.fp16].safetensors`, read by [`config`]);
//! [`generate`] writes random-weight ones in that layout for tests.
//!
//! Latent convention: [`Taesd::decode`] and [`Taesd::encode`] work on the
//! pipeline's latents, those the denoiser sees, as diffusers' pipelines do
//! with an `AutoencoderTiny` in place of the VAE: decode
//! `AutoencoderTiny.decode(latents / scaling_factor + shift_factor)`
//! (SD 3's pipeline; SD 1/2/XL's leave the shift out, which is 0 in every
//! published TAESD config), encode `(encoder(pixels) - shift_factor) *
//! scaling_factor`, with the TAESD's own config values. The published
//! configs say 1.0 and 0.0: TAESD was distilled on the scaled latents
//! `(z - vae.shift) * vae.scaling` of the model's full VAE, so it takes
//! and returns exactly what the UNet / MMDiT denoises.

pub mod config;
pub mod generate;
mod network;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

use super::config::read_json;
use super::memory;
pub use config::TaesdConfig;
pub use generate::{generate_tiny, generate_tiny_scaled};
use network::{Decoder, Encoder};

/// The weights file diffusers saves an `AutoencoderTiny` to.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// Its half-precision variant (`variant="fp16"`).
pub const FP16_WEIGHTS_FILE: &str = "diffusion_pytorch_model.fp16.safetensors";

/// A TAESD on its device, ready to encode and decode.
#[derive(Debug)]
pub struct Taesd {
    cfg: TaesdConfig,
    encoder: Encoder,
    decoder: Decoder,
    device: Device,
    dtype: DType,
    /// Floating-point parameters of the weights file.
    parameters: u64,
}

/// The weights of a TAESD folder: the fp16 variant first when running in
/// half precision, the full file first otherwise (either when it is the only
/// one), as the model loader picks a diffusers component's weights.
///
/// Errors: the folder holds neither file.
pub fn weights_file(dir: &Path, half: bool) -> Result<PathBuf> {
    let order = if half {
        [FP16_WEIGHTS_FILE, WEIGHTS_FILE]
    } else {
        [WEIGHTS_FILE, FP16_WEIGHTS_FILE]
    };
    order
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "TAESD folder {} has no {WEIGHTS_FILE} (nor {FP16_WEIGHTS_FILE})",
                dir.display()
            )
        })
}

impl Taesd {
    /// Loads the `AutoencoderTiny` folder `dir` (`config.json` and
    /// [`weights_file`]) onto `device`, its weights converted to `dtype`.
    /// diffusers never upcasts a TAESD (it registers `force_upcast` false),
    /// and neither does this: it runs in `dtype`.
    ///
    /// Errors: missing or unreadable files, a config [`TaesdConfig::validate`]
    /// refuses, missing or misshapen weights.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Taesd> {
        let cfg: TaesdConfig = read_json(&dir.join("config.json"))?;
        cfg.validate()
            .with_context(|| format!("TAESD config in {}", dir.display()))?;
        let weights = weights_file(dir, dtype != DType::F32)?;
        // SAFETY: read-only mapping of a model file, as the model loader makes them.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device)? };
        let mut taesd = Self::new(vb, &cfg)
            .with_context(|| format!("building the TAESD in {}", dir.display()))?;
        taesd.parameters = memory::parameters(&[weights])?;
        Ok(taesd)
    }

    /// Builds the network from `vb` (diffusers' names: `encoder.layers.*`,
    /// `decoder.layers.*`) in `vb`'s dtype and device. The parameter count
    /// is what the networks hold.
    pub fn new(vb: VarBuilder, cfg: &TaesdConfig) -> Result<Taesd> {
        cfg.validate()?;
        let encoder = Encoder::new(vb.pp("encoder"), cfg)?;
        let decoder = Decoder::new(vb.pp("decoder"), cfg)?;
        Ok(Self {
            parameters: parameter_count(cfg),
            cfg: cfg.clone(),
            encoder,
            decoder,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &TaesdConfig {
        &self.cfg
    }

    /// Channels of the latents it takes and returns (4 or 16).
    pub fn latent_channels(&self) -> usize {
        self.cfg.latent_channels
    }

    /// Pixels per latent along each side (8).
    pub fn scale_factor(&self) -> usize {
        self.cfg.scale_factor()
    }

    /// The dtype it runs in, and that [`Self::decode`] / [`Self::encode`] return.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Floating-point parameters of its weights (2.45 M for the published
    /// TAESD: 4.9 MB in f16).
    pub fn parameter_count(&self) -> u64 {
        self.parameters
    }

    /// Bytes its weights take on the device in its dtype.
    pub fn weight_bytes(&self) -> u64 {
        self.parameters * self.dtype.size_in_bytes() as u64
    }

    /// Peak working memory of decoding one `width` x `height` image:
    /// [`decode_activation_bytes`] for this config and dtype.
    pub fn decode_bytes(&self, width: usize, height: usize) -> u64 {
        decode_activation_bytes(&self.cfg, width, height, self.dtype)
    }

    /// The pipeline's latents [B, latent channels, h, w] (what the denoiser
    /// denoises: `(z - vae.shift_factor) * vae.scaling_factor` of the model's
    /// full VAE) to pixels [B, 3, 8h, 8w] in about [-1, 1] (not clamped), as
    /// diffusers' pipelines decode with an `AutoencoderTiny` as their VAE:
    /// `AutoencoderTiny.decode(latents / scaling_factor + shift_factor)`
    /// with the TAESD's own config (1.0 and 0.0 published: the latents go in
    /// as they are), whose `DecoderTiny` soft-clamps its input to (-3, 3)
    /// (`tanh(x / 3) * 3`) and maps its [0, 1] output to `2 x - 1`.
    ///
    /// The latents are converted to the TAESD's dtype and device; the pixels
    /// come back in its dtype. Errors: not rank 4, the wrong channel count,
    /// an empty side.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = latents
            .dims4()
            .context("TAESD decode takes latents [batch, channels, height, width]")?;
        ensure!(
            c == self.cfg.latent_channels,
            "TAESD decode: latents have {c} channels, this TAESD takes {}",
            self.cfg.latent_channels
        );
        ensure!(h > 0 && w > 0, "TAESD decode: empty latents ({h}x{w})");
        let z = latents
            .to_device(&self.device)?
            .to_dtype(self.dtype)?
            .affine(1.0 / self.cfg.scaling_factor, self.cfg.shift_factor)?;
        Ok(self.decoder.forward(&z)?.affine(2.0, -1.0)?)
    }

    /// Pixels [B, 3, H, W] in [-1, 1] to the pipeline's latents
    /// [B, latent channels, ceil(H/8), ceil(W/8)] (the convention
    /// [`Self::decode`] takes), as diffusers' img2img pipelines encode with
    /// an `AutoencoderTiny`: `(AutoencoderTiny.encode(pixels).latents -
    /// shift_factor) * scaling_factor`, where `EncoderTiny` first maps the
    /// pixels to [0, 1] (`(x + 1) / 2`). Deterministic: TAESD's latents are
    /// not a distribution to sample.
    ///
    /// The pixels are converted to the TAESD's dtype and device; the latents
    /// come back in its dtype. Errors: not rank 4, not `in_channels` (3)
    /// channels, an empty side.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = pixels
            .dims4()
            .context("TAESD encode takes pixels [batch, channels, height, width]")?;
        ensure!(
            c == self.cfg.in_channels,
            "TAESD encode: the image has {c} channels, this TAESD takes {}",
            self.cfg.in_channels
        );
        ensure!(h > 0 && w > 0, "TAESD encode: empty image ({h}x{w})");
        let x = pixels
            .to_device(&self.device)?
            .to_dtype(self.dtype)?
            .affine(0.5, 0.5)?;
        let z = self.encoder.forward(&x)?;
        let (scale, shift) = (self.cfg.scaling_factor, self.cfg.shift_factor);
        Ok(z.affine(scale, -shift * scale)?)
    }
}

/// Parameters the networks of `cfg` hold (weights and biases of every conv).
pub fn parameter_count(cfg: &TaesdConfig) -> u64 {
    let conv = |i: usize, o: usize, bias: bool| (9 * i * o + if bias { o } else { 0 }) as u64;
    let block = |c: usize| 3 * conv(c, c, true);
    let enc = &cfg.encoder_block_out_channels;
    let dec = &cfg.decoder_block_out_channels;
    let mut n = 0;
    for (i, (&c, &b)) in enc.iter().zip(&cfg.num_encoder_blocks).enumerate() {
        n += if i == 0 {
            conv(cfg.in_channels, c, true)
        } else {
            conv(c, c, false)
        };
        n += b as u64 * block(c);
    }
    n += conv(*enc.last().unwrap_or(&0), cfg.latent_channels, true);
    n += conv(cfg.latent_channels, *dec.first().unwrap_or(&0), true);
    for (i, (&c, &b)) in dec.iter().zip(&cfg.num_decoder_blocks).enumerate() {
        n += b as u64 * block(c);
        n += if i + 1 < dec.len() {
            conv(c, c, false)
        } else {
            conv(c, cfg.out_channels, true)
        };
    }
    n
}

/// Peak working memory, in bytes, of decoding one `width` x `height` image
/// with the published TAESD shape (64 channels: diffusers' defaults) in
/// `dtype`: [`decode_activation_bytes`] of `TaesdConfig::default()`.
/// 416 MiB at 512x512 in f16, 1.6 GiB at 1024x1024 (f32: twice that).
pub fn activation_bytes(width: usize, height: usize, dtype: DType) -> u64 {
    decode_activation_bytes(&TaesdConfig::default(), width, height, dtype)
}

/// Peak working memory, in bytes, of decoding one `width` x `height` image
/// (batch 1; a batch multiplies it) with `cfg` in `dtype`, derived from the
/// largest convolution: without cuDNN, Candle's CUDA conv2d builds an
/// im2col buffer of 9 input maps (3x3 kernel), writes the product, and
/// copies it back to NCHW (2 output maps), while its input map and, inside
/// a residual block, the block's input (kept for the skip) stay alive. The
/// peak is a block's second or third conv at full resolution: 13 maps of the
/// last stage's width (64 published) at `width` x `height`; this walks every
/// conv, upsampling and block of `DecoderTiny` and takes the largest. The
/// CPU's direct convolution needs no im2col buffer (about 5 maps).
pub fn decode_activation_bytes(
    cfg: &TaesdConfig,
    width: usize,
    height: usize,
    dtype: DType,
) -> u64 {
    let f = cfg.upsampling_scaling_factor.max(1);
    let stages = cfg.decoder_block_out_channels.len();
    // Pixels of a map at stage i (the last at full resolution).
    let pixels = |i: usize| -> u64 {
        let d = f.pow((stages - 1 - i.min(stages - 1)) as u32);
        (width.div_ceil(d) * height.div_ceil(d)) as u64
    };
    // A 3x3 conv: held maps, its input, im2col (9 inputs), output and copy.
    let conv =
        |c_in: usize, c_out: usize, held: usize, p: u64| (held + 10 * c_in + 2 * c_out) as u64 * p;
    let widths = &cfg.decoder_block_out_channels;
    let Some(&first) = widths.first() else {
        return 0;
    };
    let mut peak = conv(cfg.latent_channels, first, 0, pixels(0));
    for (i, (&c, &blocks)) in widths.iter().zip(&cfg.num_decoder_blocks).enumerate() {
        let p = pixels(i);
        if blocks > 0 {
            peak = peak.max(conv(c, c, c, p));
        }
        if i + 1 < stages {
            let up = pixels(i + 1);
            peak = peak.max(c as u64 * (p + up)).max(conv(c, c, 0, up));
        } else {
            peak = peak.max(conv(c, cfg.out_channels, 0, p));
        }
    }
    peak * dtype.size_in_bytes() as u64
}
