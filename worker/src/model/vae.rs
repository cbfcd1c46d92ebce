//! The VAE of a loaded model: our decoder and encoder ([`super::vae_decoder`],
//! [`super::vae_encoder`]), the dtype they run in, the latent scale and the
//! tiling ([`super::vae_tiling`]).

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::taesd::Taesd;
use super::vae_decoder::VaeDecoder;
use super::vae_encoder::{split_moments, VaeEncoder};
use super::vae_tiling::{Tiling, VaeTiling};

pub struct Vae {
    decoder: VaeDecoder,
    encoder: VaeEncoder,
    /// TAESD (`--taesd`): previews and `vae: tiny` decodes.
    tiny: Option<Taesd>,
    dtype: DType,
    /// `scaling_factor` of the VAE's config: latents are (z - shift) x scale.
    pub scaling_factor: f64,
    /// `shift_factor` (SD 3's VAE), None for the others.
    pub shift_factor: Option<f64>,
    tiling: Tiling,
}

impl Vae {
    /// A VAE that tiles with `tiling` when a job's [`VaeTiling`] says so
    /// ([`Vae::decode_with`], [`Vae::posterior_with`]).
    pub fn new(
        decoder: VaeDecoder,
        encoder: VaeEncoder,
        dtype: DType,
        scaling_factor: f64,
        shift_factor: Option<f64>,
        tiling: Tiling,
    ) -> Self {
        Self {
            decoder,
            encoder,
            tiny: None,
            dtype,
            scaling_factor,
            shift_factor,
            tiling,
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

    /// The tile sizes of this VAE ([`Tiling::for_config`]).
    pub fn tiling(&self) -> &Tiling {
        &self.tiling
    }

    /// The posterior of `pixels` [1, 3, H, W] in [-1, 1]: (mean, logvar),
    /// each [1, latent channels, H / 8, W / 8]. Never tiles.
    pub fn posterior(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(self.encoder.posterior(pixels)?)
    }

    /// [`Vae::posterior`] tile by tile, as diffusers' `_tiled_encode`: the
    /// moments (mean and unclamped log variance) of overlapping pixel tiles,
    /// blended, then split and the log variance clamped to [-30, 20]. H and W
    /// must be multiples of the VAE's scale.
    pub fn posterior_tiled(&self, pixels: &Tensor, tiling: &Tiling) -> Result<(Tensor, Tensor)> {
        let moments = tiling.encode(pixels, |tile| Ok(self.encoder.moments(tile)?))?;
        Ok(split_moments(&moments)?)
    }

    /// [`Vae::posterior`] or [`Vae::posterior_tiled`] with this VAE's tiles,
    /// as `mode` decides ([`Tiling::tiles_pixels`]).
    pub fn posterior_with(&self, pixels: &Tensor, mode: VaeTiling) -> Result<(Tensor, Tensor)> {
        let (_, _, h, w) = pixels.dims4()?;
        if self.tiling.tiles_pixels(mode, h, w) {
            self.posterior_tiled(pixels, &self.tiling)
        } else {
            self.posterior(pixels)
        }
    }

    /// Unscaled latents [batch, c, h, w] to pixels [batch, 3, 8h, 8w] in
    /// about [-1, 1]. Never tiles.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.decoder.decode(z)?)
    }

    /// [`Vae::decode`] tile by tile, as diffusers' `tiled_decode`:
    /// overlapping latent tiles decoded alone, blended and cropped. Same
    /// shapes as [`Vae::decode`]; working memory that of one tile.
    pub fn decode_tiled(&self, z: &Tensor, tiling: &Tiling) -> Result<Tensor> {
        tiling.decode(z, |tile| Ok(self.decoder.decode(tile)?))
    }

    /// [`Vae::decode`] or [`Vae::decode_tiled`] with this VAE's tiles, as
    /// `mode` decides ([`Tiling::tiles_latents`]).
    pub fn decode_with(&self, z: &Tensor, mode: VaeTiling) -> Result<Tensor> {
        let (_, _, h, w) = z.dims4()?;
        if self.tiling.tiles_latents(mode, h, w) {
            self.decode_tiled(z, &self.tiling)
        } else {
            self.decode(z)
        }
    }
}
