//! Writes random-weight TAESDs in diffusers' `AutoencoderTiny` layout
//! (`config.json` and `diffusion_pytorch_model.safetensors`), loadable by
//! diffusers' `AutoencoderTiny.from_pretrained` and by [`super::Taesd::load`].

use anyhow::{ensure, Context, Result};
use std::path::Path;

use super::{config::CLASS_NAME, Taesd, TaesdConfig, WEIGHTS_FILE};
use crate::model::generate::{build, save, write_json, WeightInit};

/// Seed stream of TAESD weights (the model's networks use 1-5, ControlNets
/// 6), so a TAESD written with a model's seed still differs from its VAE.
const STREAM: u64 = 7;

/// Writes `cfg` (with the `_class_name` and the `block_out_channels` that
/// diffusers adds on saving) and random weights into `dir` (created if
/// needed). With [`WeightInit::Seeded`] the files are byte-identical for a
/// seed, and the encoder's output conv is scaled so its latents are of order
/// 1. Errors: a config [`TaesdConfig::validate`] refuses, unwritable `dir`.
pub fn write_taesd(dir: &Path, cfg: &TaesdConfig, init: WeightInit) -> Result<()> {
    cfg.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut json = serde_json::to_value(cfg)?;
    let obj = json
        .as_object_mut()
        .context("a config serialises to an object")?;
    obj.insert("_class_name".into(), CLASS_NAME.into());
    obj.insert("_diffusers_version".into(), "0.30.0".into());
    obj.insert(
        "block_out_channels".into(),
        serde_json::to_value(&cfg.decoder_block_out_channels)?,
    );
    write_json(&dir.join("config.json"), &json)?;
    let mut weights = build(init, STREAM, |vb| Taesd::new(vb, cfg).map(drop))?;
    if let WeightInit::Seeded(_) = init {
        // Through ten random residual blocks the encoder's output shrinks to
        // a few hundredths; trained TAESDs' latents are of order 1 (within
        // about [-3, 3]), and so are these once its last conv is scaled up.
        let last = weights
            .keys()
            .filter_map(|k| {
                k.strip_prefix("encoder.layers.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .context("a TAESD without encoder layers")?;
        for part in ["weight", "bias"] {
            let name = format!("encoder.layers.{last}.{part}");
            let t = weights.remove(&name).context("the encoder's last conv")?;
            weights.insert(name, (t * ENCODER_OUT_GAIN)?);
        }
    }
    save(weights, &dir.join(WEIGHTS_FILE))
}

/// Scale of the seeded encoder's last conv (see [`write_taesd`]).
const ENCODER_OUT_GAIN: f64 = 25.0;

/// Writes a tiny TAESD ([`TaesdConfig::tiny`]: the published structure, 8
/// channels wide) over `latent_channels` (4: SD 1/2/XL, 16: SD 3) into
/// `out_dir`, its weights seeded by `seed` (byte-identical files per seed).
/// Errors: `latent_channels` 0, unwritable `out_dir`.
pub fn generate_tiny(out_dir: &Path, latent_channels: usize, seed: u64) -> Result<()> {
    generate_tiny_scaled(out_dir, latent_channels, 8, seed)
}

/// [`generate_tiny`] for latents of `scale_factor` pixels a side
/// ([`TaesdConfig::tiny_scaled`]; 8 is [`TaesdConfig::tiny`]).
/// Errors: `latent_channels` 0, a factor that is not a power of two >= 2,
/// unwritable `out_dir`.
pub fn generate_tiny_scaled(
    out_dir: &Path,
    latent_channels: usize,
    scale_factor: usize,
    seed: u64,
) -> Result<()> {
    ensure!(latent_channels > 0, "latent channels must be positive");
    ensure!(
        scale_factor >= 2 && scale_factor.is_power_of_two(),
        "the scale factor must be a power of two, at least 2"
    );
    let cfg = if scale_factor == 8 {
        TaesdConfig::tiny(latent_channels)
    } else {
        TaesdConfig::tiny_scaled(latent_channels, scale_factor)
    };
    write_taesd(out_dir, &cfg, WeightInit::Seeded(seed))
}
