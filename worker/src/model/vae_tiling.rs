//! Tiled VAE decode and encode, as diffusers' `AutoencoderKL` does them after
//! `enable_tiling()` (`tiled_decode`, `_tiled_encode`, `blend_v`, `blend_h` in
//! `diffusers/models/autoencoders/autoencoder_kl.py`): the input is cut into
//! overlapping square tiles, each tile goes through the network alone, each
//! output tile is blended linearly into the one above and the one to its
//! left over the overlap, and the tiles are cropped and concatenated.
//!
//! Memory then follows the tile, not the image: a 2048x2048 SD 1.5 decode
//! costs what a 512x512 one does (plus the pixels it outputs). The result is
//! not the untiled one: every tile sees only its own part of the latents
//! (the decoder's mid-block attention and group norms are global), which the
//! blending hides but does not undo.

use anyhow::{ensure, Result};
use candle_core::Tensor;

use super::config::VaeConfig;

// When [`super::vae::Vae::decode_with`] and [`super::vae::Vae::posterior_with`]
// tile: the contract's `VaeTiling` (a request's `vae_tiling`).
//
// `Auto` tiles exactly when diffusers' `AutoencoderKL` with `use_tiling`
// does: when the input is larger than the tile in either dimension, i.e. an
// image wider or taller than the VAE's `sample_size` (512 for SD 1.5, 768
// for SD 2.x, 1024 for SDXL and SD 3). That size is the resolution the VAE
// was trained at and the model's native size, where the untiled decode's
// memory is already budgeted (the estimate `/v1/info` reports is made at
// the native size); beyond it the untiled decode grows with the square of
// the pixels plus the mid-block attention with the square of the latent
// tokens (SD 1.5 at 2048x2048 in f32: ~48 GiB), which is what tiling is for.
// So at and below the native size nothing changes, and above it the cost
// stays that of one tile. A memory threshold on top would make the output
// depend on the machine; the size rule keeps it a function of the request.
// `On` always goes through the tiled path (an input no larger than the tile
// stride, 3/4 of a tile, is then one tile: the untiled result); `Off` never
// tiles.
pub use sd_worker_sdk::VaeTiling;

/// Tile sizes, as diffusers' `AutoencoderKL` attributes of the same names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// `tile_sample_min_size`: the side of a pixel tile.
    pub sample_size: usize,
    /// `tile_latent_min_size`: the side of a latent tile, `sample_size / scale`.
    pub latent_size: usize,
    /// `tile_overlap_factor`: the fraction of a tile its neighbour overlaps.
    pub overlap_factor: f64,
    /// The VAE's pixels per latent per side (2^(blocks - 1)).
    pub scale: usize,
}

/// Where tiles start, how far they blend and how much of each is kept, in
/// one direction (decode: latents in, pixels out; encode: the reverse).
#[derive(Debug, Clone, Copy)]
struct Steps {
    /// Side of an input tile.
    tile: usize,
    /// Distance between tile starts, in the input.
    stride: usize,
    /// Rows / columns blended with the previous tile, in the output.
    blend: usize,
    /// Rows / columns kept of each output tile.
    keep: usize,
}

impl Tiling {
    /// diffusers' default overlap (`tile_overlap_factor`).
    pub const OVERLAP: f64 = 0.25;

    /// Tiles of `sample_size` pixels for a VAE of `scale` pixels per latent,
    /// overlapping by `overlap_factor`; latent tiles are `sample_size / scale`
    /// (truncated, as diffusers' `int(...)`). Errors when the sizes do not
    /// line up: the pixels kept of each decoded tile must be `scale` times
    /// the latent stride (and the encoded the reverse), or the output would
    /// not be `scale` times the input (diffusers does not check; e.g. 512,
    /// 768 and 1024 with 0.25 all do).
    pub fn new(sample_size: usize, scale: usize, overlap_factor: f64) -> Result<Self> {
        ensure!(scale > 0, "the VAE scale must be positive");
        ensure!(
            (0.0..1.0).contains(&overlap_factor),
            "the tile overlap must be in [0, 1), not {overlap_factor}"
        );
        let tiling = Self {
            sample_size,
            latent_size: sample_size / scale,
            overlap_factor,
            scale,
        };
        let (d, e) = (tiling.decode_steps(), tiling.encode_steps());
        ensure!(
            d.stride > 0
                && e.stride > 0
                && d.keep == scale * d.stride
                && e.keep * scale == e.stride,
            "VAE tiles of {sample_size} pixels overlapping by {overlap_factor} do not line up \
             with the VAE's scale {scale} (choose a multiple of {})",
            4 * scale
        );
        Ok(tiling)
    }

    /// The tiling diffusers would use for this VAE: tiles of the config's
    /// `sample_size`, 0.25 overlap. A config without `sample_size`
    /// (single-file checkpoints, our generated shapes) gets the larger of the
    /// model's native size `native_side` (pixels) and 512, the smallest
    /// `sample_size` of the published SD VAEs (diffusers' class default, 32,
    /// would tile every image into 4x4 latents). The size is rounded down to
    /// a multiple of 4 x scale (at least one), which always lines up with a
    /// 0.25 overlap and leaves every published size (512, 768, 1024) as is,
    /// so an odd config cannot stop a model from loading.
    pub fn for_config(cfg: &VaeConfig, native_side: usize) -> Result<Self> {
        let size = cfg.sample_size.unwrap_or(native_side.max(512));
        let unit = 4 * cfg.scale_factor();
        Self::new(
            (size / unit).max(1) * unit,
            cfg.scale_factor(),
            Self::OVERLAP,
        )
    }

    /// Whether a decode of latents `h` x `w` tiles under `mode` (diffusers'
    /// `_decode`: either side larger than `tile_latent_min_size`).
    pub fn tiles_latents(&self, mode: VaeTiling, h: usize, w: usize) -> bool {
        match mode {
            VaeTiling::On => true,
            VaeTiling::Off => false,
            VaeTiling::Auto => h > self.latent_size || w > self.latent_size,
        }
    }

    /// Whether an encode of pixels `h` x `w` tiles under `mode` (diffusers'
    /// `_encode`: either side larger than `tile_sample_min_size`).
    pub fn tiles_pixels(&self, mode: VaeTiling, h: usize, w: usize) -> bool {
        match mode {
            VaeTiling::On => true,
            VaeTiling::Off => false,
            VaeTiling::Auto => h > self.sample_size || w > self.sample_size,
        }
    }

    /// Number of tiles per row and per column for a decode of latents `h` x `w`.
    pub fn decode_grid(&self, h: usize, w: usize) -> (usize, usize) {
        let s = self.decode_steps().stride;
        (h.div_ceil(s), w.div_ceil(s))
    }

    /// diffusers' `tiled_decode`: `overlap_size`, `blend_extent`, `row_limit`.
    fn decode_steps(&self) -> Steps {
        let blend = (self.sample_size as f64 * self.overlap_factor) as usize;
        Steps {
            tile: self.latent_size,
            stride: (self.latent_size as f64 * (1.0 - self.overlap_factor)) as usize,
            blend,
            keep: self.sample_size - blend,
        }
    }

    /// diffusers' `_tiled_encode`: the same with pixels and latents swapped.
    fn encode_steps(&self) -> Steps {
        let blend = (self.latent_size as f64 * self.overlap_factor) as usize;
        Steps {
            tile: self.sample_size,
            stride: (self.sample_size as f64 * (1.0 - self.overlap_factor)) as usize,
            blend,
            keep: self.latent_size - blend,
        }
    }

    /// Latents [B, c, h, w] through `decode` (one tile [B, c, <= t, <= t] to
    /// pixels [B, 3, scale x its sides]) tile by tile: pixels [B, 3, scale h,
    /// scale w].
    pub fn decode(&self, z: &Tensor, decode: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let (_, _, h, w) = z.dims4()?;
        let out = run_tiles(z, self.decode_steps(), decode)?;
        check_size(&out, h * self.scale, w * self.scale, "decoded")?;
        Ok(out)
    }

    /// Pixels [B, 3, H, W] through `encode` (one tile to its moments [B, 2c,
    /// its sides / scale], before any clamping) tile by tile: moments [B, 2c,
    /// H / scale, W / scale]. H and W must be multiples of the scale.
    pub fn encode(
        &self,
        pixels: &Tensor,
        encode: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = pixels.dims4()?;
        ensure!(
            h.is_multiple_of(self.scale) && w.is_multiple_of(self.scale),
            "a tiled encode needs sides that are multiples of {}, not {w}x{h}",
            self.scale
        );
        let out = run_tiles(pixels, self.encode_steps(), encode)?;
        check_size(&out, h / self.scale, w / self.scale, "encoded")?;
        Ok(out)
    }
}

fn check_size(out: &Tensor, h: usize, w: usize, what: &str) -> Result<()> {
    let (_, _, oh, ow) = out.dims4()?;
    ensure!(
        (oh, ow) == (h, w),
        "the tiled VAE {what} {ow}x{oh} instead of {w}x{h}"
    );
    Ok(())
}

/// Tiles start every `stride` rows and columns of `input`; each goes through
/// `f`, is blended into the (already blended) output tile above it and then
/// into the one to its left, and its first `keep` rows and columns are kept.
/// Only the previous row of output tiles is held.
fn run_tiles(
    input: &Tensor,
    steps: Steps,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, h, w) = input.dims4()?;
    ensure!(h > 0 && w > 0, "cannot tile an empty {w}x{h} input");
    let mut above: Vec<Tensor> = Vec::new();
    let mut rows = Vec::new();
    for top in (0..h).step_by(steps.stride) {
        let mut row: Vec<Tensor> = Vec::new();
        let mut kept = Vec::new();
        for (j, left) in (0..w).step_by(steps.stride).enumerate() {
            let tile = input
                .narrow(2, top, steps.tile.min(h - top))?
                .narrow(3, left, steps.tile.min(w - left))?
                .contiguous()?;
            let mut out = f(&tile)?;
            if let Some(up) = above.get(j) {
                out = blend(up, &out, steps.blend, 2)?;
            }
            if let Some(prev) = row.last() {
                out = blend(prev, &out, steps.blend, 3)?;
            }
            let (_, _, th, tw) = out.dims4()?;
            kept.push(
                out.narrow(2, 0, steps.keep.min(th))?
                    .narrow(3, 0, steps.keep.min(tw))?,
            );
            row.push(out);
        }
        rows.push(Tensor::cat(&kept, 3)?);
        above = row;
    }
    Ok(Tensor::cat(&rows, 2)?)
}

/// diffusers' `blend_v` (`dim` 2) and `blend_h` (`dim` 3): the first `extent`
/// rows (columns) of `b` become `a`'s last ones x (1 - y / extent) plus
/// `b`'s x (y / extent), y = 0 .. extent, with extent capped by both sides.
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let (na, nb) = (a.dim(dim)?, b.dim(dim)?);
    let e = extent.min(na).min(nb);
    if e == 0 {
        return Ok(b.clone());
    }
    let mut shape = [1usize; 4];
    shape[dim] = e;
    let ramp = |f: fn(f64) -> f64| -> Result<Tensor> {
        let v: Vec<f32> = (0..e).map(|y| f(y as f64 / e as f64) as f32).collect();
        Ok(Tensor::from_vec(v, &shape[..], b.device())?.to_dtype(b.dtype())?)
    };
    let (wa, wb) = (ramp(|t| 1.0 - t)?, ramp(|t| t)?);
    let mixed = (a.narrow(dim, na - e, e)?.broadcast_mul(&wa)?
        + b.narrow(dim, 0, e)?.broadcast_mul(&wb)?)?;
    if e == nb {
        return Ok(mixed);
    }
    Ok(Tensor::cat(&[mixed, b.narrow(dim, e, nb - e)?], dim)?)
}

/// The bytes one tiled decode holds besides a tile's own working memory, for
/// latents `h` x `w` in `dtype_bytes` elements: two rows of decoded tiles
/// (3 channels), the kept pieces and the output image.
pub fn held_bytes(tiling: &Tiling, h: usize, w: usize, dtype_bytes: usize) -> u64 {
    let (_, cols) = tiling.decode_grid(h, w);
    let tile = (3 * tiling.sample_size * tiling.sample_size) as u64;
    let image = (3 * h * w * tiling.scale * tiling.scale) as u64;
    (2 * cols as u64 * tile + 2 * image) * dtype_bytes as u64
}
