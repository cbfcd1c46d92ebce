//! ControlNet units of a request, the control-map preprocessors, and
//! `POST /v1/preprocess`. The preprocessor vocabulary is defined here once:
//! the worker, the OpenAPI document and the TypeScript types all take it from
//! [`PreprocessorName`] and [`PREPROCESSORS`].

use serde::{Deserialize, Serialize};

/// Default `conditioning_scale` of a unit (diffusers' `controlnet_conditioning_scale`).
pub const DEFAULT_CONDITIONING_SCALE: f64 = 1.0;
/// Largest `conditioning_scale` accepted (A1111's ControlNet weight slider ends at 2).
pub const MAX_CONDITIONING_SCALE: f64 = 2.0;
/// Most ControlNet units in one request.
pub const MAX_CONTROLNET_UNITS: usize = 4;
/// Canny's default hysteresis thresholds (A1111's ControlNet extension: 100 and 200).
pub const DEFAULT_CANNY_LOW: u32 = 100;
pub const DEFAULT_CANNY_HIGH: u32 = 200;
/// Scribble's default binarisation threshold (0..=255): darker pixels are strokes.
pub const DEFAULT_SCRIBBLE_THRESHOLD: u32 = 128;

/// One ControlNet applied to a job: its residuals, times `conditioning_scale`,
/// are added to the UNet's while the step lies in `guidance_start..guidance_end`
/// (fractions of the steps run, as diffusers' `control_guidance_start/end`).
/// Several units sum their residuals (diffusers' `MultiControlNetModel`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
// A misspelt or foreign field (A1111's `weight`) is refused, not ignored.
#[serde(deny_unknown_fields)]
pub struct ControlNetUnit {
    /// A ControlNet named in `GET /v1/info`'s `controlnets`.
    pub model: String,
    /// The control image: base64 PNG, JPEG or WebP (a `data:` URL prefix is
    /// accepted). Brought to the output size with the job's `resize_mode`;
    /// with a `preprocessor`, the map is computed from it first.
    pub image: String,
    /// Weight of the unit's residuals, 0..=2 (1.0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditioning_scale: Option<f64>,
    /// Fraction of the steps after which the unit starts acting, 0..1 (0.0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_start: Option<f64>,
    /// Fraction of the steps after which the unit stops acting, above
    /// `guidance_start`, up to 1 (1.0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_end: Option<f64>,
    // The preprocessor's fields are written out (not flattened from
    // `PreprocessParams`) so that a refusal names the exact field.
    /// How `image` becomes the control map (`none` when absent: the image is the map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<PreprocessorName>,
    /// `canny`: the lower hysteresis threshold on the gradient magnitude, 0..=255 (100).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub low_threshold: Option<u32>,
    /// `canny`: the upper threshold, at least `low_threshold`, up to 255 (200).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub high_threshold: Option<u32>,
    /// `scribble`: pixels darker than this (0..=255, 128) become white strokes.
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub threshold: Option<u32>,
}

impl ControlNetUnit {
    /// The unit's preprocessor and its parameters.
    pub fn preprocess(&self) -> PreprocessParams {
        PreprocessParams {
            preprocessor: self.preprocessor,
            low_threshold: self.low_threshold,
            high_threshold: self.high_threshold,
            threshold: self.threshold,
        }
    }
}

/// A preprocessor and its parameters, as a unit or `POST /v1/preprocess`
/// sends them (their fields of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct PreprocessParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<PreprocessorName>,
    /// `canny`: the lower hysteresis threshold on the gradient magnitude, 0..=255 (100).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub low_threshold: Option<u32>,
    /// `canny`: the upper threshold, at least `low_threshold`, up to 255 (200).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub high_threshold: Option<u32>,
    /// `scribble`: pixels darker than this (0..=255, 128) become white strokes.
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub threshold: Option<u32>,
}

impl PreprocessParams {
    /// The preprocessor, `none` when absent.
    pub fn name(&self) -> PreprocessorName {
        self.preprocessor.unwrap_or(PreprocessorName::None)
    }
}

/// How a control image becomes a control map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "lowercase")]
pub enum PreprocessorName {
    /// The image is already a control map.
    #[default]
    None,
    /// Canny edges (white on black) with `low_threshold` and `high_threshold`,
    /// for the `canny` ControlNets.
    Canny,
    /// Relative depth by Depth Anything V2 (near = bright), for the `depth` ControlNets.
    Depth,
    /// Negative of the image: black lines on white (line art, sketches) become
    /// white on black, as the lineart and scribble ControlNets expect.
    Invert,
    /// Dark strokes on a light background binarised at `threshold` into
    /// white strokes on black, for the `scribble` ControlNets.
    Scribble,
}

impl PreprocessorName {
    pub const ALL: [PreprocessorName; 5] = [
        PreprocessorName::None,
        PreprocessorName::Canny,
        PreprocessorName::Depth,
        PreprocessorName::Invert,
        PreprocessorName::Scribble,
    ];

    /// The wire name (`"canny"`); also A1111's ControlNet `Module:` name.
    pub fn as_str(self) -> &'static str {
        match self {
            PreprocessorName::None => "none",
            PreprocessorName::Canny => "canny",
            PreprocessorName::Depth => "depth",
            PreprocessorName::Invert => "invert",
            PreprocessorName::Scribble => "scribble",
        }
    }
}

/// Body of `POST /v1/preprocess`: the control map of `image` as a unit with
/// the same fields would compute it, answered as a PNG.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct PreprocessRequest {
    /// base64 PNG, JPEG or WebP (a `data:` URL prefix is accepted).
    pub image: String,
    /// The preprocessor (`none` when absent: the map is the image itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<PreprocessorName>,
    /// `canny`: the lower hysteresis threshold on the gradient magnitude, 0..=255 (100).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub low_threshold: Option<u32>,
    /// `canny`: the upper threshold, at least `low_threshold`, up to 255 (200).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub high_threshold: Option<u32>,
    /// `scribble`: pixels darker than this (0..=255, 128) become white strokes.
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub threshold: Option<u32>,
}

impl PreprocessRequest {
    /// The preprocessor and its parameters.
    pub fn preprocess(&self) -> PreprocessParams {
        PreprocessParams {
            preprocessor: self.preprocessor,
            low_threshold: self.low_threshold,
            high_threshold: self.high_threshold,
            threshold: self.threshold,
        }
    }
}

/// A ControlNet this worker can apply, as `GET /v1/info` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct ControlNetInfo {
    /// What a unit's `model` field says: the folder name, or the file name
    /// without `.safetensors`.
    pub name: String,
    /// The family it was trained for (the loaded model's, or it is not listed).
    pub family: String,
    /// Whether it is in memory now (`--controlnet` ones always are;
    /// `--controlnet-dir` ones are loaded on first use).
    pub loaded: bool,
    /// Its weights at the worker's dtype, and its working memory for one
    /// image at the native size with guidance.
    pub memory: crate::MemoryEstimate,
}
