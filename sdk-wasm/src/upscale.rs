//! `image_upscale` jobs and `GET /v1/upscalers`: model upscalers (ESRGAN,
//! Real-ESRGAN compact) from the worker's `--upscaler-dir`, and the built-in
//! resamplers ([`BUILTIN_UPSCALERS`], defined here once).

use serde::{Deserialize, Serialize};

/// A resampler every worker has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinUpscaler {
    /// What `upscaler` (and `hires.upscaler`) names.
    pub name: &'static str,
    /// What a user interface shows ([`UpscalerInfo::label`]).
    pub label: &'static str,
}

/// Resamplers every worker has: Lanczos (3 lobes) and nearest neighbour.
pub const BUILTIN_UPSCALERS: [BuiltinUpscaler; 2] = [
    BuiltinUpscaler {
        name: "lanczos",
        label: "Lanczos (resampling)",
    },
    BuiltinUpscaler {
        name: "nearest",
        label: "Nearest neighbour (resampling)",
    },
];
/// `upscaler` when absent.
pub const DEFAULT_UPSCALER: &str = "lanczos";
/// `scale` when absent with a built-in resampler.
pub const DEFAULT_BUILTIN_SCALE: f64 = 2.0;
/// Largest `scale`.
pub const MAX_UPSCALE: f64 = 8.0;
/// `tile_size` when absent: input pixels a side per tile of a model upscaler.
pub const DEFAULT_TILE_SIZE: u32 = 512;
/// `tile_overlap` when absent: input pixels each tile reads past its edges.
pub const DEFAULT_TILE_OVERLAP: u32 = 32;
/// Smallest non-zero `tile_size`, and the largest.
pub const MIN_TILE_SIZE: u32 = 32;
pub const MAX_TILE_SIZE: u32 = 2048;

/// Body of `image_upscale`: `image` made `scale` times larger by `upscaler`.
/// A model upscaler runs at its own factor, in tiles (memory bounded by
/// `tile_size`, whatever the image), and Lanczos brings its result to
/// `scale`. One `progress` event per tile (`phase: upscale`); cancellation
/// takes effect between tiles.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(deny_unknown_fields)]
pub struct UpscaleRequest {
    /// Base64 PNG, JPEG or WebP (a `data:` URL prefix is accepted).
    pub image: String,
    /// A name of `GET /v1/upscalers` (`lanczos` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscaler: Option<String>,
    /// Factor on width and height, above 0 up to 8 (the model's own factor,
    /// or 2 for a built-in, when absent). The output must fit the worker's
    /// `limits.max_input_pixels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Input pixels a side per model tile, 32..=2048, or 0 for one pass over
    /// the whole image (512 when absent).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub tile_size: Option<u32>,
    /// Input pixels each tile reads past its edges so seams vanish, below
    /// half the tile (32 when absent).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub tile_overlap: Option<u32>,
    /// Output format (PNG by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<crate::ImageFormat>,
    /// Sent by the hive for its bookkeeping; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// One entry of `GET /v1/upscalers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct UpscalerInfo {
    /// What `upscaler` (and `hires.upscaler`) names: a built-in, or the
    /// file's stem.
    pub name: String,
    /// `builtin` or `model`.
    pub kind: String,
    /// What a user interface shows for a built-in (`Lanczos (resampling)`);
    /// absent for a model (its `name`, `architecture` and `scale` say it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A model's architecture: `ESRGAN` or `RealESRGAN-compact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// A model's own factor (2, 4, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    /// A model's parameter count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// A model file's size on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_distinct_names_and_labels_and_the_default_is_one() {
        assert!(BUILTIN_UPSCALERS.iter().any(|u| u.name == DEFAULT_UPSCALER));
        for (i, a) in BUILTIN_UPSCALERS.iter().enumerate() {
            assert!(!a.label.is_empty() && a.label != a.name, "{a:?}");
            for b in &BUILTIN_UPSCALERS[i + 1..] {
                assert!(a.name != b.name && a.label != b.label);
            }
        }
    }

    #[test]
    fn the_request_refuses_unknown_fields_and_takes_integral_floats() {
        let r: UpscaleRequest =
            serde_json::from_str(r#"{"image": "AAA", "tile_size": 256.0, "scale": 4}"#).unwrap();
        assert_eq!(r.tile_size, Some(256));
        assert!(
            serde_json::from_str::<UpscaleRequest>(r#"{"image": "A", "prompt": "x"}"#).is_err()
        );
    }
}
