//! Single-file checkpoints: one `.safetensors` holding every network under
//! the original (CompVis/LDM, Stability) names, as A1111, ComfyUI and model
//! sites ship Stable Diffusion 1.x, 2.x and SDXL. The keys are renamed to the
//! diffusers layout ([`keys`]), the configs are inferred from the tensor
//! shapes ([`infer`]), and the result is written once as a diffusers folder in
//! the cache (keyed by the file's content fingerprint); the worker then loads
//! that folder like any other, so there is one loading path.
//!
//! Single-file ControlNets (the original ControlNet repository's layout) are
//! converted the same way, into a diffusers `ControlNetModel` folder
//! ([`controlnet`]).
//!
//! A checkpoint carries no tokenizer: it comes from `--tokenizer DIR`, or else
//! from the hub repository of the family's diffusers release.

pub mod controlnet;
#[cfg(test)]
mod controlnet_tests;
mod infer;
pub(crate) mod keys;

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::shapes::{self, ModelShape};
use super::source;
use infer::{infer_open_clip, infer_text, infer_unet, infer_vae};
use keys::{open_clip, text_key, unet_key, vae_key};

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const SD1_CLIP: &str = "cond_stage_model.transformer.";
const SD2_OPEN_CLIP: &str = "cond_stage_model.model.";
const SDXL_CLIP: &str = "conditioner.embedders.0.transformer.";
const SDXL_OPEN_CLIP: &str = "conditioner.embedders.1.model.";

/// The family of a checkpoint, from which text encoders it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sd1,
    /// `v`: trained for v-prediction (SD 2.x 768), else epsilon (512-base).
    Sd2 {
        v: bool,
    },
    Sdxl,
}

impl Kind {
    fn detect(names: &BTreeSet<String>, file: &Path) -> Result<Self> {
        let has = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
        if has("model.diffusion_model.joint_blocks.") {
            bail!("{} is an SD 3 single-file checkpoint, which is not supported: load its diffusers folder (for example `--model sd3.5-medium`)", file.display())
        }
        if has(SDXL_OPEN_CLIP) && has(SDXL_CLIP) {
            Ok(Kind::Sdxl)
        } else if has("conditioner.embedders.") {
            bail!("{} is an SDXL refiner (one OpenCLIP encoder, aesthetic-score conditioning), which is not supported", file.display())
        } else if has(SD2_OPEN_CLIP) {
            Ok(Kind::Sd2 {
                v: sd2_is_v_prediction(file)?,
            })
        } else if has(SD1_CLIP) {
            Ok(Kind::Sd1)
        } else {
            bail!(
                "{} has no text encoder this worker knows (CLIP `{SD1_CLIP}*`, OpenCLIP `{SD2_OPEN_CLIP}*` or SDXL's `conditioner.embedders.*`): not a full Stable Diffusion checkpoint",
                file.display()
            )
        }
    }

    /// Tokenizer folders of the converted model, and where the hub keeps
    /// each: (repository, folder inside it).
    fn tokenizers(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Kind::Sd1 => &[("tokenizer", SD1_TOKENIZER_REPO, "")],
            Kind::Sd2 { .. } => &[("tokenizer", "stabilityai/stable-diffusion-2-1", "tokenizer")],
            Kind::Sdxl => &[
                ("tokenizer", SDXL_REPO, "tokenizer"),
                ("tokenizer_2", SDXL_REPO, "tokenizer_2"),
            ],
        }
    }
}

/// Where SD 1.x's tokenizer lives on the hub (the text encoder it was trained with).
pub const SD1_TOKENIZER_REPO: &str = "openai/clip-vit-large-patch14";
const SDXL_REPO: &str = "stabilityai/stable-diffusion-xl-base-1.0";

/// SD 2.x checkpoints do not say whether they predict v (768) or noise
/// (512-base). Tools keep that in a config beside the file, `<stem>.yaml`
/// (`parameterization: "v"`); without one, v-prediction at 768 as diffusers'
/// `from_single_file` assumes.
fn sd2_is_v_prediction(file: &Path) -> Result<bool> {
    match sidecar_yaml(file) {
        Some(yaml) => {
            let text = std::fs::read_to_string(&yaml)
                .with_context(|| format!("reading {}", yaml.display()))?;
            Ok(text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("parameterization:")
                    && l.trim_start_matches("parameterization:")
                        .trim()
                        .trim_matches(['"', '\''])
                        == "v"
            }))
        }
        None => Ok(true),
    }
}

fn sidecar_yaml(file: &Path) -> Option<PathBuf> {
    let yaml = file.with_extension("yaml");
    yaml.is_file().then_some(yaml)
}

/// Whether `path` names a single-file checkpoint rather than a folder.
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Returns the diffusers folder converted from `file`, converting it on first
/// use into `cache/converted/<fingerprint>/<file stem>`. Tokenizers come
/// from `tokenizer` (a folder of tokenizer files, or a diffusers folder; for SDXL one holding
/// `tokenizer/` and `tokenizer_2/`), or else from the hub, on first use only.
pub fn converted_folder(file: &Path, tokenizer: Option<&Path>, cache: &Path) -> Result<PathBuf> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let parent = cache.join("converted").join(fingerprint(file)?);
    convert_once(&parent, &stem, |staged| convert(file, tokenizer, staged))
}

/// `parent/stem`, written by `convert` into a staging folder and moved into
/// place on first use (concurrent first uses each convert, one wins).
fn convert_once(
    parent: &Path,
    stem: &str,
    convert: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let target = parent.join(stem);
    if target.join(".complete").is_file() {
        return Ok(target);
    }
    let staging = parent.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    let staged = staging.join(stem);
    convert(&staged)?;
    std::fs::write(staged.join(".complete"), b"")?;
    if std::fs::rename(&staged, &target).is_err() && !target.join(".complete").is_file() {
        bail!(
            "could not place the converted model at {}",
            target.display()
        );
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target)
}

/// Size plus a hash of the safetensors header (names, shapes, offsets) and
/// the first and last MiB of data: cheap for multi-GB files, and any
/// re-saved or edited checkpoint (or its `.yaml`) changes it.
fn fingerprint(file: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    for start in [0, len.saturating_sub(1 << 20)] {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(start))?;
        (&mut f).take(1 << 20).read_to_end(&mut buf)?;
        h.update(&buf);
    }
    // SD 2.x reads its prediction type from the config beside the file.
    if let Some(yaml) = sidecar_yaml(file) {
        h.update(std::fs::read(yaml)?);
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `file` as a diffusers folder at `out`.
pub fn convert(file: &Path, tokenizer: Option<&Path>, out: &Path) -> Result<()> {
    // Safety: read-only mapping of a model file that is not modified meanwhile.
    let st = unsafe { MmapedSafetensors::new(file) }
        .with_context(|| format!("reading {}", file.display()))?;
    let names: BTreeSet<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    let kind = Kind::detect(&names, file)?;
    for (prefix, what) in [(UNET, "UNet"), (VAE, "VAE")] {
        if !names.iter().any(|n| n.starts_with(prefix)) {
            bail!(
                "{} has no {what} (`{prefix}*` tensors): not a full Stable Diffusion checkpoint",
                file.display()
            );
        }
    }
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(st
            .get(name)
            .with_context(|| format!("the checkpoint has no `{name}`"))?
            .shape()
            .to_vec())
    };

    // The text encoders: (folder, config, tensor prefix, OpenCLIP layers kept).
    let encoders = match kind {
        Kind::Sd1 => vec![(
            "text_encoder",
            infer_text(&names, &shape, SD1_CLIP)?,
            SD1_CLIP,
            None,
        )],
        Kind::Sd2 { .. } => {
            let cfg = infer_open_clip(&names, &shape, SD2_OPEN_CLIP, 1, false)?;
            let layers = Some(cfg.num_hidden_layers);
            vec![("text_encoder", cfg, SD2_OPEN_CLIP, layers)]
        }
        Kind::Sdxl => {
            let second = infer_open_clip(&names, &shape, SDXL_OPEN_CLIP, 0, true)?;
            let layers = Some(second.num_hidden_layers);
            vec![
                (
                    "text_encoder",
                    infer_text(&names, &shape, SDXL_CLIP)?,
                    SDXL_CLIP,
                    None,
                ),
                ("text_encoder_2", second, SDXL_OPEN_CLIP, layers),
            ]
        }
    };
    let pooled = encoders.last().and_then(|(_, c, _, _)| c.projection_dim);
    let mut vae_cfg = infer_vae(&names, &shape)?;
    let (native_latent, scheduler, pipeline) = match kind {
        Kind::Sd1 => (
            64,
            shapes::sd_scheduler("PNDMScheduler"),
            "StableDiffusionPipeline",
        ),
        Kind::Sd2 { v } => {
            let mut scheduler = shapes::sd_scheduler("DDIMScheduler");
            if v {
                scheduler["prediction_type"] = "v_prediction".into();
            }
            (
                if v { 96 } else { 64 },
                scheduler,
                "StableDiffusionPipeline",
            )
        }
        Kind::Sdxl => (128, shapes::sdxl_scheduler(), "StableDiffusionXLPipeline"),
    };
    if kind == Kind::Sdxl {
        // SDXL's VAE: its own scale, and it overflows f16.
        vae_cfg.scaling_factor = ModelShape::sdxl().vae.scaling_factor;
        vae_cfg.force_upcast = Some(true);
    }
    let unet_cfg = infer_unet(&names, &shape, kind, pooled, native_latent)?;

    let mut subs = vec!["unet", "vae", "scheduler"];
    for (folder, ..) in &encoders {
        subs.push(folder);
    }
    for (folder, ..) in kind.tokenizers() {
        subs.push(folder);
    }
    for sub in subs {
        std::fs::create_dir_all(out.join(sub))
            .with_context(|| format!("creating {}", out.display()))?;
    }
    write_json(&out.join("unet/config.json"), &unet_cfg)?;
    write_json(&out.join("vae/config.json"), &vae_cfg)?;
    for (folder, cfg, ..) in &encoders {
        write_json(&out.join(folder).join("config.json"), cfg)?;
    }
    write_json(&out.join("scheduler/scheduler_config.json"), &scheduler)?;
    let pipeline = if unet_cfg.in_channels == 9 {
        "StableDiffusionInpaintPipeline"
    } else {
        pipeline
    };
    write_json(
        &out.join("model_index.json"),
        &serde_json::json!({
            "_class_name": pipeline,
            "_converted_from": file.file_name().map(|n| n.to_string_lossy().into_owned()),
        }),
    )?;
    for (folder, repo, hub_folder) in kind.tokenizers() {
        // A diffusers model folder works too: its `tokenizer/` (and SDXL's
        // `tokenizer_2/`) subfolders are used.
        let from = match tokenizer {
            Some(dir) if dir.join(folder).is_dir() => dir.join(folder),
            Some(dir) if kind == Kind::Sdxl => {
                bail!("--tokenizer {} must hold `tokenizer/` and `tokenizer_2/` for an SDXL checkpoint (a diffusers SDXL folder does)", dir.display());
            }
            Some(dir) => dir.to_path_buf(),
            None => source::hub_tokenizer(repo, hub_folder)?,
        };
        copy_tokenizer(&from, &out.join(folder))?;
    }

    let layers = unet_cfg.layers_per_block;
    let vae_blocks = vae_cfg.block_out_channels.len();
    let mut components: Vec<(&str, String, Box<Rename>)> = vec![
        (
            UNET,
            "unet/diffusion_pytorch_model.safetensors".into(),
            Box::new(move |k, t| one(unet_key(k, layers), t)),
        ),
        (
            VAE,
            "vae/diffusion_pytorch_model.safetensors".into(),
            Box::new(move |k, t| vae_tensor(k, t, vae_blocks)),
        ),
    ];
    for (folder, _, prefix, open_clip_layers) in &encoders {
        let rename: Box<Rename> = match *open_clip_layers {
            Some(layers) => Box::new(move |k, t| open_clip(k, t, layers)),
            None => Box::new(|k, t| one(text_key(k), t)),
        };
        components.push((prefix, format!("{folder}/model.safetensors"), rename));
    }
    // One component at a time: peak memory is the largest network, not all.
    for (prefix, path, rename) in components {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for name in names.iter().filter(|n| n.starts_with(prefix)) {
            let t = st.load(name, &Device::Cpu)?;
            for (key, t) in rename(&name[prefix.len()..], t)?.unwrap_or_default() {
                if tensors.insert(key.clone(), t).is_some() {
                    bail!("two checkpoint tensors map to `{key}`");
                }
            }
        }
        candle_core::safetensors::save(&tensors, out.join(&path))
            .with_context(|| format!("writing {}", out.join(&path).display()))?;
    }
    Ok(())
}

/// An LDM tensor (name without its component prefix) to its diffusers
/// tensors, or `None` for tensors diffusers does not keep.
type Rename = dyn Fn(&str, Tensor) -> Result<Option<Vec<(String, Tensor)>>>;

fn one(name: Option<String>, t: Tensor) -> Result<Option<Vec<(String, Tensor)>>> {
    Ok(name.map(|n| vec![(n, t)]))
}

/// LDM's VAE attention uses 1x1 convolutions where diffusers has linears.
fn vae_tensor(key: &str, t: Tensor, blocks: usize) -> Result<Option<Vec<(String, Tensor)>>> {
    let Some(name) = vae_key(key, blocks) else {
        return Ok(None);
    };
    let t = if name.contains(".attentions.") && t.rank() == 4 {
        let (o, i, _, _) = t.dims4()?;
        t.reshape((o, i))?
    } else {
        t
    };
    Ok(Some(vec![(name, t)]))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    let mut copied = 0;
    for name in source::TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!(
            "{} holds no tokenizer files (tokenizer.json, or vocab.json + merges.txt)",
            from.display()
        );
    }
    Ok(())
}
