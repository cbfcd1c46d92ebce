//! How a job turns latents into pixels: the previews' decoder, the final
//! decoder (the model's VAE or TAESD, the tiny autoencoder) and tiled VAE.

use serde::{Deserialize, Serialize};

/// How `preview` events are decoded from the current estimate of the clean
/// latents (diffusers' `pred_original_sample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum PreviewMethod {
    /// The model's own VAE on the latents averaged down to at most 32 cells
    /// a side (a 256-pixel preview; at most 1/4 of a full decode). Right
    /// colours for every model, unlike a fitted latent-to-RGB table, but
    /// soft. The default without `--taesd`.
    Vae,
    /// TAESD, the tiny autoencoder (`--taesd`), at the full size: a sharp
    /// picture for a few percent of the VAE's cost. The default when loaded.
    #[serde(alias = "TAESD")]
    Taesd,
}

/// Which decoder makes the final images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum VaeChoice {
    /// The model's own VAE (the default).
    #[default]
    Full,
    /// TAESD (`--taesd`): many times faster, slightly softer and less exact
    /// in fine texture and colour; for drafts.
    Tiny,
}

/// Whether the VAE decodes (and encodes) in overlapping tiles, as diffusers'
/// `enable_tiling`: working memory bounded by the tile instead of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum VaeTiling {
    /// Tiles when the image is larger than the VAE's tile (its config's
    /// `sample_size`, 512 for SD 1.5, 1024 for SDXL). The default.
    #[default]
    Auto,
    /// Always tiles (when the image is larger than one tile).
    On,
    /// Never tiles.
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        let p: PreviewMethod = serde_json::from_str(r#""vae""#).unwrap();
        assert_eq!(p, PreviewMethod::Vae);
        assert_eq!(
            serde_json::to_string(&PreviewMethod::Taesd).unwrap(),
            r#""taesd""#
        );
        assert_eq!(
            serde_json::to_string(&VaeChoice::Tiny).unwrap(),
            r#""tiny""#
        );
        assert_eq!(
            serde_json::to_string(&VaeTiling::Auto).unwrap(),
            r#""auto""#
        );
        assert!(serde_json::from_str::<VaeTiling>(r#""yes""#).is_err());
    }
}
