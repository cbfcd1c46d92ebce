//! ControlNet control-map preprocessors: a control image in, the map a
//! ControlNet was trained on out, both RGB8 and the same size.
//!
//! - `canny` ([`canny::Canny`]): OpenCV's `cv2.Canny` on the RGB image,
//!   white edges on black, pixel for pixel as OpenCV 4.13 computes it.
//! - `invert` ([`simple::Invert`]): `255 - v` per channel.
//! - `scribble` ([`simple::Scribble`]): BT.601 grey below `threshold` ->
//!   white, anything else black.
//! - `depth` ([`depth::DepthPreprocessor`]): Depth Anything V2
//!   ([`depth_net`]), its weights loaded on first use; one more
//!   [`Preprocessor`], added to [`Preprocessors`] with [`Preprocessors::with`].
//! - `none`: the image is the map; [`Preprocessors::run`] returns it as is.
//!
//! The vocabulary and defaults are the wire contract's
//! (`sd_worker_sdk::control`). The request side: [`validate`] (or
//! [`Preprocessors::validate`], which also refuses a preprocessor this worker
//! lacks) before queueing, [`control_rgb`] to bring a decoded image to RGB8
//! as lllyasviel's `HWC3` does, then [`Preprocessors::run`]. Images are
//! decoded under the worker's `--max-input-pixels`; every preprocessor here
//! allocates O(pixels) memory and runs in O(pixels) time.
//!
//! Resizing is not done here: A1111 resizes the control image to its
//! "preprocessor resolution" before Canny; the caller chooses the size.

use std::sync::Arc;

use image::{DynamicImage, GrayImage, RgbImage};
use sd_worker_sdk::control::{DEFAULT_CANNY_HIGH, DEFAULT_CANNY_LOW, DEFAULT_SCRIBBLE_THRESHOLD};
use sd_worker_sdk::{ApiError, ErrorCode, PreprocessParams, PreprocessorName};

pub mod canny;
pub mod depth;
pub mod depth_net;
#[cfg(test)]
mod depth_reference_tests;
pub mod depth_tiny;
pub mod depth_weights;
pub mod simple;

#[cfg(test)]
mod reference_tests;

pub use canny::{canny_edges, Canny};
pub use simple::{grey_601, invert, scribble, Invert, Scribble};

/// Largest threshold accepted (`low_threshold`, `high_threshold`, `threshold`).
pub const MAX_THRESHOLD: u32 = 255;

/// One control-map preprocessor. Implementations are shared between the HTTP
/// handlers and the generation thread, so they are `Send + Sync`; one that
/// needs a model (depth) loads it on first use behind a `OnceLock` or a
/// `Mutex` in `&self`, and reports a failed load as `run`'s error.
pub trait Preprocessor: Send + Sync {
    /// The wire name it answers to.
    fn name(&self) -> PreprocessorName;

    /// The control map of `image`: RGB8, the same width and height; maps of
    /// one value per pixel (edges, depth) repeat it in the three channels.
    /// `params` has passed [`validate`]; absent fields take the contract's
    /// defaults. Errors: a model that cannot be loaded or run; never a panic.
    fn run(&self, image: &RgbImage, params: &PreprocessParams) -> anyhow::Result<RgbImage>;
}

/// The preprocessors this worker has, looked up by name.
#[derive(Clone)]
pub struct Preprocessors {
    list: Vec<Arc<dyn Preprocessor>>,
}

impl std::fmt::Debug for Preprocessors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|p| p.name().as_str()))
            .finish()
    }
}

impl Default for Preprocessors {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Preprocessors {
    /// `canny`, `invert` and `scribble` (and `none`, always there).
    pub fn builtin() -> Self {
        Preprocessors {
            list: vec![Arc::new(Canny), Arc::new(Invert), Arc::new(Scribble)],
        }
    }

    /// Adds `p`, replacing one with the same name (`depth` plugs in here).
    pub fn with(mut self, p: Arc<dyn Preprocessor>) -> Self {
        self.list.retain(|q| q.name() != p.name());
        self.list.push(p);
        self
    }

    /// The preprocessor called `name`; `None` for `none` and for one this
    /// worker lacks.
    pub fn get(&self, name: PreprocessorName) -> Option<&Arc<dyn Preprocessor>> {
        self.list.iter().find(|p| p.name() == name)
    }

    /// Whether `name` can run here (`none` always can).
    pub fn has(&self, name: PreprocessorName) -> bool {
        name == PreprocessorName::None || self.get(name).is_some()
    }

    /// The names that can run here, in [`PreprocessorName::ALL`]'s order.
    pub fn names(&self) -> Vec<PreprocessorName> {
        PreprocessorName::ALL
            .into_iter()
            .filter(|&n| self.has(n))
            .collect()
    }

    /// [`validate`], then refuses a preprocessor this worker lacks
    /// (`{at}preprocessor` named).
    pub fn validate(&self, params: &PreprocessParams, at: &str) -> Result<(), ApiError> {
        validate(params, at)?;
        let name = params.name();
        if !self.has(name) {
            let have: Vec<&str> = self.names().into_iter().map(|n| n.as_str()).collect();
            return Err(invalid(
                at,
                "preprocessor",
                format!(
                    "the `{}` preprocessor is not available on this worker (it has: {})",
                    name.as_str(),
                    have.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The control map of `image` by `params`' preprocessor; with `none`, a
    /// copy of `image`. Errors: a preprocessor this worker lacks, or its own.
    pub fn run(&self, image: &RgbImage, params: &PreprocessParams) -> anyhow::Result<RgbImage> {
        let name = params.name();
        if name == PreprocessorName::None {
            return Ok(image.clone());
        }
        let p = self.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "the `{}` preprocessor is not available on this worker",
                name.as_str()
            )
        })?;
        let map = p.run(image, params)?;
        anyhow::ensure!(
            map.dimensions() == image.dimensions(),
            "the `{}` preprocessor made a {}x{} map from a {}x{} image",
            name.as_str(),
            map.width(),
            map.height(),
            image.width(),
            image.height()
        );
        Ok(map)
    }
}

/// Checks a preprocessor's parameters; `at` prefixes the field named in the
/// error (`""` for `POST /v1/preprocess`, `"controlnets[0]."` for a unit).
/// Refused, with `ErrorCode::InvalidValue`:
/// - a threshold the chosen preprocessor does not use (`low_threshold` and
///   `high_threshold` belong to `canny`, `threshold` to `scribble`);
/// - a threshold above 255;
/// - `canny` with `low_threshold` above `high_threshold`, absent ones taken
///   as their defaults (100, 200); the field named is `high_threshold` when
///   it was given, else `low_threshold`.
pub fn validate(params: &PreprocessParams, at: &str) -> Result<(), ApiError> {
    let name = params.name();
    let fields = [
        (
            "low_threshold",
            params.low_threshold,
            PreprocessorName::Canny,
        ),
        (
            "high_threshold",
            params.high_threshold,
            PreprocessorName::Canny,
        ),
        ("threshold", params.threshold, PreprocessorName::Scribble),
    ];
    for (field, value, owner) in fields {
        let Some(v) = value else { continue };
        if name != owner {
            return Err(invalid(
                at,
                field,
                format!(
                    "`{field}` belongs to the `{}` preprocessor, not `{}`",
                    owner.as_str(),
                    name.as_str()
                ),
            ));
        }
        if v > MAX_THRESHOLD {
            return Err(invalid(
                at,
                field,
                format!("`{field}` must be 0..={MAX_THRESHOLD}, got {v}"),
            ));
        }
    }
    if name == PreprocessorName::Canny {
        let (low, high) = canny_thresholds(params);
        if low > high {
            return Err(match params.high_threshold {
                Some(_) => invalid(
                    at,
                    "high_threshold",
                    format!("`high_threshold` ({high}) must be at least `low_threshold` ({low})"),
                ),
                None => invalid(
                    at,
                    "low_threshold",
                    format!(
                        "`low_threshold` ({low}) must be at most `high_threshold` ({high} by default)"
                    ),
                ),
            });
        }
    }
    Ok(())
}

fn invalid(at: &str, field: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidValue, message).with_field(format!("{at}{field}"))
}

/// `canny`'s `(low, high)` thresholds, defaults filled in (100, 200).
pub fn canny_thresholds(params: &PreprocessParams) -> (u32, u32) {
    (
        params.low_threshold.unwrap_or(DEFAULT_CANNY_LOW),
        params.high_threshold.unwrap_or(DEFAULT_CANNY_HIGH),
    )
}

/// `scribble`'s threshold, default filled in (128).
pub fn scribble_threshold(params: &PreprocessParams) -> u32 {
    params.threshold.unwrap_or(DEFAULT_SCRIBBLE_THRESHOLD)
}

/// A decoded control image as the RGB8 the preprocessors take, as
/// lllyasviel's `annotator/util.py` `HWC3` makes it: grey is repeated in the
/// three channels; an image with alpha is laid over white in f32
/// (`c * a + 255 * (1 - a)` with `a = alpha / 255`, clipped to 0..=255 and
/// truncated), so that a sketch on a transparent background reads as black
/// on white. 16-bit and float images are first brought to 8 bits by `image`.
pub fn control_rgb(image: &DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = f32::from(p.0[3]) / 255.0;
        for c in 0..3 {
            let v = f32::from(p.0[c]) * a + 255.0 * (1.0 - a);
            // `as u8` truncates and saturates, as numpy's clip + astype.
            o.0[c] = v.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// A one-value-per-pixel map as RGB8, the value in all three channels.
pub fn grey_to_rgb(grey: &GrayImage) -> RgbImage {
    let mut out = RgbImage::new(grey.width(), grey.height());
    for (o, g) in out.pixels_mut().zip(grey.pixels()) {
        o.0 = [g.0[0]; 3];
    }
    out
}

#[cfg(test)]
mod tests;
