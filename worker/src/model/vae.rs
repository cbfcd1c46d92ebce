//! The VAE of a loaded model: Candle's `AutoEncoderKL` decoder, our encoder
//! ([`super::vae_encoder`]), the dtype they run in and the latent scale.

use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKL;

use super::taesd::Taesd;
use super::vae_encoder::VaeEncoder;

pub struct Vae {
    decoder: AutoEncoderKL,
    encoder: VaeEncoder,
    /// TAESD (`--taesd`): previews and `vae: tiny` decodes.
    tiny: Option<Taesd>,
    dtype: DType,
    /// `scaling_factor` of the VAE's config: latents are (z - shift) x scale.
    pub scaling_factor: f64,
    /// `shift_factor` (SD 3's VAE), None for the others.
    pub shift_factor: Option<f64>,
}

impl Vae {
    pub fn new(
        decoder: AutoEncoderKL,
        encoder: VaeEncoder,
        dtype: DType,
        scaling_factor: f64,
        shift_factor: Option<f64>,
    ) -> Self {
        Self {
            decoder,
            encoder,
            tiny: None,
            dtype,
            scaling_factor,
            shift_factor,
        }
    }

    /// TAESD, when the worker loaded one.
    pub fn tiny(&self) -> Option<&Taesd> {
        self.tiny.as_ref()
    }

    /// Adds TAESD beside the full VAE.
    pub fn set_tiny(&mut self, tiny: Taesd) {
        self.tiny = Some(tiny);
    }

    /// The dtype the VAE runs in: f32 when the config asks to be upcast from
    /// f16 (`force_upcast`: the SDXL VAE overflows f16 and decodes to black).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The posterior of `pixels` [1, 3, H, W] in [-1, 1]: (mean, logvar),
    /// each [1, latent channels, H / 8, W / 8].
    pub fn posterior(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(self.encoder.posterior(pixels)?)
    }

    /// Unscaled latents [batch, c, h, w] to pixels [batch, 3, 8h, 8w] in
    /// about [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.decoder.decode(z)?)
    }
}
