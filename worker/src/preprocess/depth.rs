//! The `depth` control-map preprocessor: relative depth by Depth Anything V2,
//! near = bright, as the depth ControlNets expect.
//!
//! The chain is the original repository's `DepthAnythingV2.infer_image`
//! (`depth_anything_v2/dpt.py`, `image2tensor` with `util/transform.py`):
//! 1. the RGB image, as f64 in 0..1, is resized bicubically (OpenCV's
//!    `INTER_CUBIC`: A = -0.75, half-pixel centres, edges repeated, no
//!    antialiasing) to [`network_size`]: aspect ratio kept, the scale making
//!    the *shorter* side 518 (`resize_method="lower_bound"`), each side then
//!    rounded to a multiple of 14 (round half to even, as `np.round`; up when
//!    that falls below 518);
//! 2. ImageNet normalisation (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225);
//! 3. the network ([`DepthNet`]): relative depth at the network size, larger = nearer;
//! 4. bilinear resize back to the input size (`F.interpolate(...,
//!    mode="bilinear", align_corners=True)`);
//! 5. min..max to 0..255, truncated to u8 (`astype(np.uint8)`), as the
//!    original `run.py` and A1111's ControlNet `depth_anything_v2` annotator do.
//!    A constant map (max = min) gives black.
//!
//! One departure bounds the work: when the reference rule would make the long
//! side exceed [`MAX_NETWORK_LONG_SIDE`] (aspect ratios beyond 3:1), the image
//! is instead scaled so that the long side is that bound and the short side is
//! rounded to a multiple of 14 (at least 14). The network's tokens are thus at
//! most 37 x 111 for ViT-S.

use super::depth_net::{DepthNet, DepthNetConfig};
use super::depth_weights::{config_from, read_weights, var_builder, DepthSource};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use image::{GrayImage, RgbImage};
use std::sync::{Arc, Mutex};

/// Network input side the reference resizes the shorter side to (37 patches of 14).
pub const NETWORK_SHORT_SIDE: usize = 518;
/// Largest long side of the network input (3 x 518): beyond a 3:1 aspect
/// ratio the short side shrinks below 518 instead (see the module docs).
pub const MAX_NETWORK_LONG_SIDE: usize = 1554;
/// ImageNet mean and standard deviation (RGB).
pub const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const STD: [f64; 3] = [0.229, 0.224, 0.225];

/// A loaded Depth Anything V2.
pub struct DepthEstimator {
    net: DepthNet,
    device: Device,
    dtype: DType,
    source: String,
}

/// Raw outputs of one estimate, for tests and diagnostics.
#[derive(Debug, Clone)]
pub struct DepthPrediction {
    /// Network input size (width, height).
    pub network_size: (usize, usize),
    /// The network's relative depth, row-major [height][width] at `network_size`.
    pub network_depth: Vec<f32>,
    /// That depth resized to the input image (row-major, f32).
    pub depth: Vec<f32>,
    /// The control map.
    pub map: GrayImage,
}

impl DepthEstimator {
    /// Reads the weights (see `depth_weights` for the layouts and the config)
    /// and builds the network on `device` in `dtype` (F32 on the CPU; F16 or
    /// BF16 on GPUs). Errors name the file: missing, not safetensors, not a
    /// Depth Anything checkpoint, or missing tensors.
    pub fn load(source: &DepthSource, device: &Device, dtype: DType) -> Result<Self> {
        let files = source.resolve()?;
        let path = &files.weights;
        let weights = read_weights(path)?;
        let cfg = config_from(&weights, files.config.as_deref(), path)?;
        let net = DepthNet::new(cfg, var_builder(weights, dtype, device))
            .with_context(|| format!("building the depth model from {}", path.display()))?;
        Ok(Self {
            net,
            device: device.clone(),
            dtype,
            source: files.source,
        })
    }

    /// Where the weights came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn config(&self) -> &DepthNetConfig {
        self.net.config()
    }

    /// The network alone: x [batch, 3, H, W] (ImageNet-normalised, H and W
    /// multiples of 14, any dtype and device) -> relative depth [batch, H, W],
    /// f32 on the CPU.
    pub fn net_forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_device(&self.device)?.to_dtype(self.dtype)?;
        Ok(self
            .net
            .forward(&x)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?)
    }

    /// The depth control map of `image`: same size, near = bright, 0..255.
    pub fn estimate(&self, image: &RgbImage) -> Result<GrayImage> {
        Ok(self.predict(image)?.map)
    }

    /// [`Self::estimate`] with the intermediate depths.
    pub fn predict(&self, image: &RgbImage) -> Result<DepthPrediction> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if w == 0 || h == 0 {
            bail!("the depth preprocessor got an empty image");
        }
        let (nw, nh) = network_size(w, h);
        let input = network_input(image, nw, nh);
        let x = Tensor::from_vec(input, (1, 3, nh, nw), &self.device)?.to_dtype(self.dtype)?;
        let network_depth = self
            .net
            .forward(&x)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let depth = resize_bilinear_align_corners(&network_depth, nw, nh, w, h);
        let map = to_map(&depth, w, h);
        Ok(DepthPrediction {
            network_size: (nw, nh),
            network_depth,
            depth,
            map,
        })
    }
}

/// A depth model loaded on first use and kept: cheap to create, so the
/// worker can hold one whether or not a request ever asks for `depth`.
/// A failed load is reported and retried on the next call.
pub struct LazyDepthEstimator {
    source: DepthSource,
    device: Device,
    dtype: DType,
    loaded: Mutex<Option<Arc<DepthEstimator>>>,
}

impl LazyDepthEstimator {
    pub fn new(source: DepthSource, device: Device, dtype: DType) -> Self {
        Self {
            source,
            device,
            dtype,
            loaded: Mutex::new(None),
        }
    }

    pub fn source(&self) -> &DepthSource {
        &self.source
    }

    /// The estimator, loading it on the first call (blocking: downloads and reads the weights).
    pub fn get(&self) -> Result<Arc<DepthEstimator>> {
        let mut slot = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let e = Arc::new(
            DepthEstimator::load(&self.source, &self.device, self.dtype)
                .with_context(|| format!("loading the depth model {}", self.source))?,
        );
        *slot = Some(e.clone());
        Ok(e)
    }
}

/// Network input size (width, height) for a `width` x `height` image: the
/// original `Resize(518, 518, keep_aspect_ratio=True, ensure_multiple_of=14,
/// resize_method="lower_bound")`, bounded by [`MAX_NETWORK_LONG_SIDE`].
pub fn network_size(width: usize, height: usize) -> (usize, usize) {
    const M: f64 = 14.0;
    let target = NETWORK_SHORT_SIDE as f64;
    let (sw, sh) = (target / width as f64, target / height as f64);
    let scale = sw.max(sh);
    let fit = |x: f64, min: f64| -> f64 {
        let y = (x / M).round_ties_even() * M;
        if y < min {
            (x / M).ceil() * M
        } else {
            y
        }
    };
    let (nw, nh) = (
        fit(scale * width as f64, target),
        fit(scale * height as f64, target),
    );
    let cap = MAX_NETWORK_LONG_SIDE as f64;
    if nw.max(nh) <= cap {
        return (nw as usize, nh as usize);
    }
    let scale = cap / width.max(height) as f64;
    let side = |x: usize| ((scale * x as f64 / M).round() * M).clamp(M, cap) as usize;
    (side(width), side(height))
}

/// The image as the network's input: resized to `nw` x `nh` (OpenCV
/// `INTER_CUBIC` on f64 values in 0..1), ImageNet-normalised, f32 [3, nh, nw].
pub fn network_input(image: &RgbImage, nw: usize, nh: usize) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let cols = cubic_taps(w, nw);
    let rows = cubic_taps(h, nh);
    let px = image.as_raw();
    let mut out = vec![0f32; 3 * nh * nw];
    // Horizontal pass for every source row, then vertical (OpenCV's order).
    let mut tmp = vec![0f64; 3 * h * nw];
    for y in 0..h {
        for (x, (idx, wt)) in cols.iter().enumerate() {
            for c in 0..3 {
                let mut s = 0f64;
                for k in 0..4 {
                    s += wt[k] as f64 * (px[(y * w + idx[k]) * 3 + c] as f64 / 255.0);
                }
                tmp[(c * h + y) * nw + x] = s;
            }
        }
    }
    for c in 0..3 {
        for (y, (idx, wt)) in rows.iter().enumerate() {
            for x in 0..nw {
                let mut s = 0f64;
                for k in 0..4 {
                    s += wt[k] as f64 * tmp[(c * h + idx[k]) * nw + x];
                }
                out[(c * nh + y) * nw + x] = ((s - MEAN[c]) / STD[c]) as f32;
            }
        }
    }
    out
}

/// OpenCV's cubic taps from `input` to `output` samples: source position
/// `(o + 0.5) * input / output - 0.5` in f32, coefficients in f32
/// (`interpolateCubic`, the last one 1 minus the others), indices clamped.
fn cubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5) as f32;
            let base = src.floor();
            let t = src - base;
            let mut wt = super::depth_net::cubic_weights(t);
            wt[3] = 1.0 - wt[0] - wt[1] - wt[2];
            let idx = std::array::from_fn(|k| {
                (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize
            });
            (idx, wt)
        })
        .collect()
}

/// Bilinear resize with aligned corners of a row-major `w` x `h` f32 map to
/// `ow` x `oh` (PyTorch's CPU `upsample_bilinear2d`, `align_corners=True`).
pub fn resize_bilinear_align_corners(
    src: &[f32],
    w: usize,
    h: usize,
    ow: usize,
    oh: usize,
) -> Vec<f32> {
    let axis = |input: usize, output: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = if output > 1 {
            (input as f32 - 1.0) / (output as f32 - 1.0)
        } else {
            0.0
        };
        (0..output)
            .map(|o| {
                let r = scale * o as f32;
                let i0 = (r as usize).min(input - 1);
                let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
                let l1 = r - i0 as f32;
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let (xs, ys) = (axis(w, ow), axis(h, oh));
    let mut out = Vec::with_capacity(ow * oh);
    for &(y0, y1, h0, h1) in &ys {
        for &(x0, x1, w0, w1) in &xs {
            let top = w0 * src[y0 * w + x0] + w1 * src[y0 * w + x1];
            let bottom = w0 * src[y1 * w + x0] + w1 * src[y1 * w + x1];
            out.push(h0 * top + h1 * bottom);
        }
    }
    out
}

/// min..max to 0..255, truncated (`((d - min) / (max - min) * 255).astype(uint8)`);
/// black when the map is constant.
pub fn to_map(depth: &[f32], w: usize, h: usize) -> GrayImage {
    let (mn, mx) = depth
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = mx - mn;
    let px = depth
        .iter()
        .map(|&v| {
            if range > 0.0 && range.is_finite() {
                ((v - mn) / range * 255.0).clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect();
    GrayImage::from_raw(w as u32, h as u32, px).expect("w x h pixels")
}

/// The `depth` preprocessor: Depth Anything V2's relative depth, near =
/// bright, in the three channels; its weights loaded on first use.
pub struct DepthPreprocessor {
    estimator: LazyDepthEstimator,
}

impl DepthPreprocessor {
    pub fn new(estimator: LazyDepthEstimator) -> Self {
        Self { estimator }
    }
}

impl super::Preprocessor for DepthPreprocessor {
    fn name(&self) -> sd_worker_sdk::PreprocessorName {
        sd_worker_sdk::PreprocessorName::Depth
    }

    fn run(&self, image: &RgbImage, _params: &sd_worker_sdk::PreprocessParams) -> Result<RgbImage> {
        let depth = self.estimator.get()?.estimate(image)?;
        Ok(super::grey_to_rgb(&depth))
    }
}
