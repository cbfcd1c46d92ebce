//! The hires fix of `image_generation` (AUTOMATIC1111's "Hires. fix",
//! stable-diffusion.cpp's server `hires`): a first pass at the base size, an
//! upscale of its result (in latent space or in pixels), then image to image
//! at the target size with the job's seed. The latent upscalers' vocabulary
//! is defined here once ([`LATENT_UPSCALERS`]); pixel upscalers are the
//! worker's (`GET /v1/upscalers`).

use serde::{Deserialize, Serialize};

/// `denoising_strength` of the second pass when absent (A1111's default).
pub const DEFAULT_HIRES_STRENGTH: f64 = 0.7;
/// `scale` when neither `scale` nor `width`/`height` is given (A1111's default).
pub const DEFAULT_HIRES_SCALE: f64 = 2.0;
/// Largest `scale` accepted (A1111's slider ends at 4).
pub const MAX_HIRES_SCALE: f64 = 4.0;
/// The upscaler used when `upscaler` is absent.
pub const DEFAULT_HIRES_UPSCALER: &str = "latent";

/// An upscaler that resizes the first pass's latents directly (no VAE round
/// trip), as A1111's "Latent" modes do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct LatentUpscaler {
    /// The name a request uses.
    pub name: &'static str,
    /// A1111's name for it (what its infotexts write as `Hires upscaler`).
    pub a1111: &'static str,
    /// The interpolation: `bilinear`, `nearest` or `bicubic` (PyTorch's
    /// `F.interpolate` with `align_corners=False`, no antialiasing).
    pub mode: &'static str,
}

/// The latent upscalers `hires.upscaler` may name besides the pixel ones.
pub const LATENT_UPSCALERS: [LatentUpscaler; 3] = [
    LatentUpscaler {
        name: "latent",
        a1111: "Latent",
        mode: "bilinear",
    },
    LatentUpscaler {
        name: "latent-nearest",
        a1111: "Latent (nearest)",
        mode: "nearest",
    },
    LatentUpscaler {
        name: "latent-bicubic",
        a1111: "Latent (bicubic)",
        mode: "bicubic",
    },
];

/// The latent upscaler named `name` (its wire name or A1111's, any case).
pub fn latent_upscaler(name: &str) -> Option<&'static LatentUpscaler> {
    LATENT_UPSCALERS
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(name) || u.a1111.eq_ignore_ascii_case(name))
}

/// Where [`typescript_module`]'s output is committed, from the repository root.
pub const TYPESCRIPT_MODULE_PATH: &str = "packages/sdk/src/latent-upscalers.ts";

/// The TypeScript module of [`LATENT_UPSCALERS`]
/// (`packages/sdk/src/latent-upscalers.ts`) and the hires fix's defaults, so
/// that clients offer them without writing them again by hand.
pub fn typescript_module() -> String {
    let rows = serde_json::to_string_pretty(&LATENT_UPSCALERS).expect("the table serialises");
    format!(
        "// Generated from sdk-wasm/src/hires.rs (`typescript_module`): do not edit.\n\
         // `SD_WORKER_SDK_WRITE_TS=1 cargo test -p sd-worker-sdk hires` rewrites it;\n\
         // that test fails while this file is stale.\n\
         \n\
         import type {{ LatentUpscaler }} from '../wasm/sd_worker_sdk.js';\n\
         \n\
         /** The latent upscalers a hires fix's `upscaler` may name besides `GET /v1/upscalers`' (the first is the default). */\n\
         export const LATENT_UPSCALERS: readonly LatentUpscaler[] = {rows};\n\
         \n\
         /** `hires.scale` when neither it nor `hires.width`/`hires.height` is given. */\n\
         export const DEFAULT_HIRES_SCALE = {DEFAULT_HIRES_SCALE:?};\n\
         /** Largest `hires.scale`. */\n\
         export const MAX_HIRES_SCALE = {MAX_HIRES_SCALE:?};\n\
         /** `hires.denoising_strength` when absent. */\n\
         export const DEFAULT_HIRES_STRENGTH = {DEFAULT_HIRES_STRENGTH:?};\n"
    )
}

/// `hires` of an `image_generation` request. The target size is `scale` times
/// the base `width` x `height`, or `width` x `height` here (both, or one and
/// the other from the aspect ratio); it must satisfy the same limits as any
/// size (`GET /v1/info`'s `limits`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(deny_unknown_fields)]
pub struct HiresFix {
    /// Factor on the base size, above 1 up to 4 (2 when neither this nor
    /// `width`/`height` is given). Not together with `width`/`height`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Target width in pixels (a multiple of the size multiple).
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub width: Option<u32>,
    /// Target height in pixels.
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub height: Option<u32>,
    /// `latent` (bilinear, the default), `latent-nearest`, `latent-bicubic`
    /// ([`LATENT_UPSCALERS`]; A1111's names such as `"Latent (nearest)"` too),
    /// or a pixel upscaler of `GET /v1/upscalers` (`lanczos`, `nearest`, a
    /// model such as `RealESRGAN_x4plus`): the first pass is decoded, upscaled,
    /// resized to the target with Lanczos and encoded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscaler: Option<String>,
    /// Steps of the second pass's schedule (0 or absent: the job's `steps`);
    /// as in image to image it runs `floor(steps x denoising_strength)` of them.
    #[serde(
        default,
        deserialize_with = "crate::numbers::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    pub steps: Option<u32>,
    /// How far the second pass moves from the upscaled first pass, above 0 up
    /// to 1 (0.7 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denoising_strength: Option<f64>,
}

/// Which pass a `progress` or `preview` event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The first pass of a hires-fix job, at the base size.
    Base,
    /// The second pass of a hires-fix job, at the target size.
    Hires,
    /// `image_upscale`: one tile upscaled.
    Upscale,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_upscalers_answer_to_their_a1111_names() {
        assert_eq!(latent_upscaler("latent").unwrap().mode, "bilinear");
        assert_eq!(
            latent_upscaler("Latent (nearest)").unwrap().name,
            "latent-nearest"
        );
        assert_eq!(latent_upscaler("LATENT-BICUBIC").unwrap().mode, "bicubic");
        assert!(latent_upscaler("lanczos").is_none());
        assert!(latent_upscaler(DEFAULT_HIRES_UPSCALER).is_some());
    }

    /// The committed TypeScript table must be what the Rust table generates.
    /// `SD_WORKER_SDK_WRITE_TS=1` rewrites it instead of failing.
    #[test]
    fn hires_typescript_module_is_current() {
        crate::ts_modules::assert_current(TYPESCRIPT_MODULE_PATH, &typescript_module(), "hires");
        assert_eq!(LATENT_UPSCALERS[0].name, DEFAULT_HIRES_UPSCALER);
    }

    #[test]
    fn unknown_fields_are_refused_and_integers_take_floats() {
        let h: HiresFix =
            serde_json::from_str(r#"{"scale": 1.5, "steps": 4.0, "upscaler": "latent"}"#).unwrap();
        assert_eq!(h.steps, Some(4));
        assert!(serde_json::from_str::<HiresFix>(r#"{"hr_scale": 2}"#).is_err());
    }
}
