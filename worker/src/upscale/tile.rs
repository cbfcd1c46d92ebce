//! Tiled upscaling and the working-memory estimate.
//!
//! Tiles: the image is cut into a grid of `tile` x `tile` squares (the last
//! row / column smaller). Each square is run with up to `overlap` extra input
//! pixels on each side (clamped to the image) and only the output of the
//! square itself is kept, so no blending is needed and the output equals the
//! untiled one exactly wherever the network's receptive field fits within the
//! overlap: `num_conv + 2` px for the compact model; nominally ~`15 nb + 4`
//! px for ESRGAN, but its 0.2 residual scaling damps the far field (the
//! tiny 2-block model at overlap 8 is within 1e-3 of untiled, see the
//! tests), so a 16-32 px overlap leaves no visible seam. For pixel-unshuffle models
//! `tile` and `overlap` are rounded up to multiples of 4 so every tile's
//! padding and unshuffle grid line up with the whole image's.

use super::{Upscaler, UpscalerArch};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Tile and overlap actually used (rounded to the size multiple).
fn grid(up: &Upscaler, tile: usize, overlap: usize) -> (usize, usize) {
    let m = up.size_multiple();
    (round_up(tile, m), round_up(overlap, m))
}

/// `[start, end)` spans of the tiles along a side of `n`.
fn spans(n: usize, tile: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(tile)
        .map(|s| (s, (s + tile).min(n)))
        .collect()
}

/// Tiles [`upscale_tiled`] runs for an `h` x `w` image (1 untiled) on a
/// network whose sides are padded to `multiple` ([`Upscaler::size_multiple`]).
pub fn tile_count(multiple: usize, h: usize, w: usize, tile_size: usize) -> usize {
    if tile_size == 0 || (h <= tile_size && w <= tile_size) {
        return 1;
    }
    let tile = round_up(tile_size, multiple.max(1));
    spans(h, tile).len() * spans(w, tile).len()
}

pub(super) fn upscale_tiled(
    up: &Upscaler,
    image: &Tensor,
    tile_size: usize,
    tile_overlap: usize,
    on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Tensor> {
    let (b, _, h, w) = image.dims4().map_err(|_| {
        anyhow::anyhow!(
            "upscaler input must be [1, C, H, W], got {:?}",
            image.dims()
        )
    })?;
    ensure!(
        b == 1,
        "tiled upscaling takes one image at a time, got a batch of {b}"
    );
    if tile_size == 0 || (h <= tile_size && w <= tile_size) {
        let out = up.forward(image)?.to_device(&Device::Cpu)?;
        on_tile(1, 1)?;
        return Ok(out);
    }
    let (tile, ov) = grid(up, tile_size, tile_overlap);
    let s = up.scale();
    let (ys, xs) = (spans(h, tile), spans(w, tile));
    let total = ys.len() * xs.len();
    let mut done = 0;
    let mut rows = Vec::with_capacity(ys.len());
    for &(y0, y1) in &ys {
        let (ry0, ry1) = (y0.saturating_sub(ov), (y1 + ov).min(h));
        let mut row = Vec::with_capacity(xs.len());
        for &(x0, x1) in &xs {
            let (rx0, rx1) = (x0.saturating_sub(ov), (x1 + ov).min(w));
            let region = image.narrow(2, ry0, ry1 - ry0)?.narrow(3, rx0, rx1 - rx0)?;
            let out = up.forward(&region)?;
            // A copy of the centre alone, so the tile's full output is freed.
            let centre = out
                .narrow(2, (y0 - ry0) * s, (y1 - y0) * s)?
                .narrow(3, (x0 - rx0) * s, (x1 - x0) * s)?
                .to_device(&Device::Cpu)?
                .contiguous()?;
            drop(out);
            row.push(centre);
            done += 1;
            on_tile(done, total)?;
        }
        rows.push(Tensor::cat(&row, 3)?);
    }
    Ok(Tensor::cat(&rows, 2)?)
}

/// Peak device elements (of the model's dtype) of one network call on an
/// input of `h` x `w` pixels (after padding to the size multiple).
///
/// Candle's CUDA convolution (no cuDNN) materialises im2col: a 3x3 conv from
/// `ci` to `co` channels over N output pixels holds its input (ci N), the
/// columns (9 ci N), the matmul result and its transposed copy (2 co N).
/// Counting what else is alive at each step:
/// - RRDBNet, at the trunk resolution P = h w / shuffle^2: the trunk input,
///   the RRDB input and the dense-block input (3 nf), the four growth outputs
///   (4 gc), and conv5 of a dense block (input nf + 4 gc, 9x its columns,
///   2 nf out): `(15 nf + 44 gc) P`;
/// - each upsampling stage k at N = P 4^k: the previous features (nf N / 4),
///   the nearest-upsampled copy (nf N), columns (9 nf N) and 2 nf N out:
///   `12.25 nf N`; the HR conv at the last resolution: `12 nf N`, and the last
///   conv `(10 nf + 2 out_nc) N`;
/// - SRVGG at P = h w: the input (in_nc P) and a body conv (nf + 9 nf + 2 nf):
///   `(in_nc + 12 nf) P`; the last conv `(in_nc + 10 nf + 2 out_nc s^2) P`;
///   the pixel shuffle, the upsampled input and their sum `3 out_nc s^2 P`.
///
/// The peak is the largest of these; the CPU's tiled convolution needs less,
/// so this is an upper bound there.
pub fn activation_elements(arch: &UpscalerArch, h: usize, w: usize) -> u64 {
    let f = |x: usize| x as f64;
    let peak = match arch {
        UpscalerArch::Esrgan(c) => {
            let p = f(h * w) / f(c.shuffle * c.shuffle);
            let (nf, gc) = (f(c.nf), f(c.gc));
            let body = (15.0 * nf + 44.0 * gc) * p;
            let hr_n = p * f(1 << (2 * c.upsamples));
            let ups = if c.upsamples > 0 {
                12.25 * nf * hr_n
            } else {
                0.0
            };
            let hr = 12.0 * nf * hr_n;
            let last = (10.0 * nf + 2.0 * f(c.out_nc)) * hr_n;
            body.max(ups).max(hr).max(last)
        }
        UpscalerArch::Compact(c) => {
            let p = f(h * w);
            let (nf, s2) = (f(c.nf), f(c.upscale * c.upscale));
            let out = f(c.out_nc) * s2;
            let body = (f(c.in_nc) + 12.0 * nf) * p;
            let last = (f(c.in_nc) + 10.0 * nf + 2.0 * out) * p;
            let tail = (f(c.in_nc) + 3.0 * out) * p;
            body.max(last).max(tail)
        }
    };
    peak.ceil() as u64
}

pub(super) fn working_memory_bytes(
    up: &Upscaler,
    height: usize,
    width: usize,
    tile_size: usize,
    tile_overlap: usize,
) -> u64 {
    let (th, tw) = if tile_size == 0 || (height <= tile_size && width <= tile_size) {
        (height, width)
    } else {
        let (tile, ov) = grid(up, tile_size, tile_overlap);
        ((tile + 2 * ov).min(height), (tile + 2 * ov).min(width))
    };
    let m = up.size_multiple();
    let (th, tw) = (round_up(th.max(1), m), round_up(tw.max(1), m));
    let arch = up.arch();
    let s2 = (up.scale() * up.scale()) as u64;
    let px = (th * tw) as u64;
    let elem = up.dtype.size_in_bytes() as u64;
    // Input and output of the call in f32, besides the network's own tensors.
    let io = 4 * px * (arch.input_channels() as u64 + arch.output_channels() as u64 * s2 * 2);
    activation_elements(arch, th, tw) * elem + io
}
