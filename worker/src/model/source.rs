//! Where a model's files come from: a local diffusers folder or a Hugging Face
//! hub repository (downloaded into the standard cache). Both end as the same
//! [`ModelFiles`], so everything after this module is source-agnostic.

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Short names for well-known repositories (documented in docs/MODELS.md).
pub const ALIASES: &[(&str, &str)] = &[
    ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ("sd1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    (
        "sd15-inpainting",
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
    ),
    ("sd2-base", "stabilityai/stable-diffusion-2-base"),
    ("sd21", "stabilityai/stable-diffusion-2-1"),
    ("sd21-base", "stabilityai/stable-diffusion-2-1-base"),
    ("sd-turbo", "stabilityai/sd-turbo"),
    ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0"),
    ("sdxl-turbo", "stabilityai/sdxl-turbo"),
    (
        "sd3-medium",
        "stabilityai/stable-diffusion-3-medium-diffusers",
    ),
    ("sd3.5-medium", "stabilityai/stable-diffusion-3.5-medium"),
    ("sd3.5-large", "stabilityai/stable-diffusion-3.5-large"),
    (
        "sd3.5-large-turbo",
        "stabilityai/stable-diffusion-3.5-large-turbo",
    ),
];

pub fn resolve_alias(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|(_, repo)| *repo)
        .unwrap_or(name)
}

/// The files a tokenizer folder may hold (`tokenizer.json`, or `vocab.json` +
/// `merges.txt`, and the settings files).
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Paths of every file the loader reads.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What a request's `model` field must say.
    pub id: String,
    /// Human-readable origin: folder path or `hf://repo@revision`.
    pub source: String,
    pub model_index: Option<PathBuf>,
    /// `sd-worker.json`: what the folder says about itself to the worker's
    /// users (its `example_prompts`), when it has one.
    pub worker_json: Option<PathBuf>,
    /// `unet/` (SD 1.x, 2.x, XL) or `transformer/` (SD 3's MMDiT).
    pub denoiser: DenoiserFolder,
    pub denoiser_config: PathBuf,
    pub denoiser_weights: Vec<PathBuf>,
    pub vae_config: PathBuf,
    pub vae_weights: Vec<PathBuf>,
    pub text_encoder_config: PathBuf,
    pub text_encoder_weights: Vec<PathBuf>,
    pub tokenizer_dir: PathBuf,
    pub scheduler_config: PathBuf,
    /// SDXL's and SD 3's second text encoder (OpenCLIP bigG) and its tokenizer.
    pub text_encoder_2: Option<EncoderFiles>,
    /// SD 3's T5 and its tokenizer; absent when the folder has none or when
    /// it was left out to save memory.
    pub text_encoder_3: Option<EncoderFiles>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenoiserFolder {
    Unet,
    Transformer,
}

/// What to fetch of a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    /// Prefer fp16 weight variants.
    pub half: bool,
    /// Leave SD 3's T5 encoder out (neither downloaded nor loaded).
    pub skip_t5: bool,
}

#[derive(Debug, Clone)]
pub struct EncoderFiles {
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub tokenizer_dir: PathBuf,
}

/// A place files can be asked for by their path inside the repository.
pub(crate) trait FileStore {
    /// Whether `rel` exists (without downloading it, where possible).
    fn has(&self, rel: &str) -> bool;
    /// A local path of `rel`, downloading it when needed.
    fn get(&self, rel: &str) -> Result<PathBuf>;
}

struct LocalDir(PathBuf);

impl FileStore for LocalDir {
    fn has(&self, rel: &str) -> bool {
        self.0.join(rel).is_file()
    }
    fn get(&self, rel: &str) -> Result<PathBuf> {
        let p = self.0.join(rel);
        if !p.is_file() {
            bail!("model folder {} has no `{rel}`", self.0.display());
        }
        Ok(p)
    }
}

pub(crate) enum Hub {
    Online {
        repo: hf_hub::api::sync::ApiRepo,
        files: BTreeSet<String>,
    },
    /// HF_HUB_OFFLINE: only what the cache already holds.
    Offline(hf_hub::CacheRepo),
}

impl FileStore for Hub {
    fn has(&self, rel: &str) -> bool {
        match self {
            Hub::Online { files, .. } => files.contains(rel),
            Hub::Offline(cache) => cache.get(rel).is_some(),
        }
    }
    fn get(&self, rel: &str) -> Result<PathBuf> {
        match self {
            Hub::Online { repo, .. } => repo
                .get(rel)
                .with_context(|| format!("downloading `{rel}`")),
            Hub::Offline(cache) => cache.get(rel).with_context(|| {
                format!("`{rel}` is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
            }),
        }
    }
}

/// Resolves a local diffusers folder.
pub fn local(dir: &Path, wanted: Wanted) -> Result<ModelFiles> {
    if !dir.is_dir() {
        bail!("model path {} is not a directory", dir.display());
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let store = LocalDir(dir.clone());
    collect(&store, id, dir.display().to_string(), wanted)
}

/// Resolves a hub repository, downloading what is missing from the cache.
/// Honours HF_HOME (cache location), HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE.
pub fn hub(repo_or_alias: &str, revision: Option<&str>, wanted: Wanted) -> Result<ModelFiles> {
    let repo_id = resolve_alias(repo_or_alias).to_string();
    let revision = revision.unwrap_or("main").to_string();
    let store = hub_store(&repo_id, &revision)?;
    if let Hub::Offline(cached) = &store {
        if [
            "model_index.json",
            "unet/config.json",
            "transformer/config.json",
        ]
        .iter()
        .all(|f| cached.get(f).is_none())
        {
            bail!(
                "`{repo_id}` (revision {revision}) is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
                Cache::from_env().path().display()
            );
        }
    }
    let source = format!("hf://{repo_id}@{revision}");
    collect(&store, repo_id, source, wanted)
}

/// A hub repository as a file store: online (listing its files), or under
/// HF_HUB_OFFLINE only what the cache holds.
pub(crate) fn hub_store(repo_id: &str, revision: &str) -> Result<Hub> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::from_env();
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
        .unwrap_or(false);
    if offline {
        return Ok(Hub::Offline(cache.repo(repo)));
    }
    let token = std::env::var("HF_TOKEN").ok().or_else(|| cache.token());
    let mut builder = ApiBuilder::from_cache(cache)
        .with_progress(true)
        .with_token(token);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api: Api = builder
        .build()
        .context("building the Hugging Face client")?;
    let repo = api.repo(repo);
    let info = repo.info().with_context(|| {
        format!(
            "looking up `{repo_id}` on the Hugging Face hub (set HF_TOKEN for gated repositories)"
        )
    })?;
    let files = info.siblings.into_iter().map(|s| s.rfilename).collect();
    Ok(Hub::Online { repo, files })
}

/// Fetches only the tokenizer files of a hub repository (for single-file
/// checkpoints, which carry none); returns the folder they are in.
pub fn hub_tokenizer(repo_id: &str, folder: &str) -> Result<PathBuf> {
    let store = hub_store(repo_id, "main")?;
    let names = [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ];
    fetch_tokenizer(&store, folder, &names)?
        .with_context(|| format!("`{repo_id}` has no vocab.json and merges.txt in `{folder}`"))
}

/// A diffusers ControlNet repository (`config.json` and
/// `diffusion_pytorch_model[.fp16].safetensors` at its top level) from the
/// hub: the folder of its files in the Hugging Face cache.
///
/// Errors: the repository cannot be reached or has no ControlNet files.
pub fn hub_controlnet(repo_id: &str, want_half: bool) -> Result<PathBuf> {
    let store = hub_store(repo_id, "main")?;
    let config = store
        .get("config.json")
        .with_context(|| format!("`{repo_id}` has no config.json at its top level"))?;
    let files = weights(&store, "", "diffusion_pytorch_model", want_half)?;
    let folder = config
        .parent()
        .context("the hub cache gave a file without a folder")?
        .to_path_buf();
    if files.iter().any(|f| f.parent() != Some(folder.as_path())) {
        bail!("`{repo_id}`: its weights are not beside its config.json");
    }
    Ok(folder)
}

/// The model folder's own file for the worker (example prompts).
pub const WORKER_JSON: &str = "sd-worker.json";

fn collect(
    store: &dyn FileStore,
    id: String,
    source: String,
    wanted: Wanted,
) -> Result<ModelFiles> {
    let half = wanted.half;
    let (denoiser, folder) = if store.has("unet/config.json") {
        (DenoiserFolder::Unet, "unet")
    } else if store.has("transformer/config.json") {
        (DenoiserFolder::Transformer, "transformer")
    } else {
        bail!("`{id}` is not a diffusers Stable Diffusion folder: it has neither `unet/config.json` nor `transformer/config.json` (pass a single-file checkpoint's .safetensors file itself)");
    };
    let model_index = store
        .has("model_index.json")
        .then(|| store.get("model_index.json"))
        .transpose()?;
    let worker_json = store
        .has(WORKER_JSON)
        .then(|| store.get(WORKER_JSON))
        .transpose()?;
    let tokenizer = tokenizer_dir(store, "tokenizer")?;
    let encoder = |n: &str| -> Result<Option<EncoderFiles>> {
        let folder = format!("text_encoder{n}");
        let config = format!("{folder}/config.json");
        if !store.has(&config) {
            return Ok(None);
        }
        Ok(Some(EncoderFiles {
            config: store.get(&config)?,
            weights: weights(store, &folder, "model", half)?,
            tokenizer_dir: tokenizer_dir(store, &format!("tokenizer{n}"))?,
        }))
    };
    let text_encoder_3 = if wanted.skip_t5 { None } else { encoder("_3")? };
    Ok(ModelFiles {
        denoiser,
        denoiser_config: store.get(&format!("{folder}/config.json"))?,
        denoiser_weights: weights(store, folder, "diffusion_pytorch_model", half)?,
        vae_config: store.get("vae/config.json")?,
        vae_weights: weights(store, "vae", "diffusion_pytorch_model", half)?,
        text_encoder_config: store.get("text_encoder/config.json")?,
        text_encoder_weights: weights(store, "text_encoder", "model", half)?,
        scheduler_config: store.get("scheduler/scheduler_config.json")?,
        tokenizer_dir: tokenizer,
        text_encoder_2: encoder("_2")?,
        text_encoder_3,
        model_index,
        worker_json,
        id,
        source,
    })
}

/// Fetches the tokenizer files that exist; the folder is where they landed.
fn tokenizer_dir(store: &dyn FileStore, folder: &str) -> Result<PathBuf> {
    fetch_tokenizer(store, folder, &TOKENIZER_FILES)?.with_context(|| {
        format!("the model has no {folder}/ folder with tokenizer.json or vocab.json + merges.txt")
    })
}

/// Fetches those of `names` that exist in `folder` ("" for the repository
/// root); the local folder they landed in, if any did.
fn fetch_tokenizer(store: &dyn FileStore, folder: &str, names: &[&str]) -> Result<Option<PathBuf>> {
    let mut dir = None;
    for name in names {
        let rel = if folder.is_empty() {
            name.to_string()
        } else {
            format!("{folder}/{name}")
        };
        if store.has(&rel) {
            dir = store.get(&rel)?.parent().map(Path::to_path_buf);
        }
    }
    Ok(dir)
}

/// Picks a component's safetensors: the fp16 variant first when half precision is
/// asked for (or when it is all there is), sharded checkpoints through their index.
fn weights(
    store: &dyn FileStore,
    component: &str,
    base: &str,
    want_half: bool,
) -> Result<Vec<PathBuf>> {
    // An empty component: the repository's top level.
    let prefix = if component.is_empty() {
        String::new()
    } else {
        format!("{component}/")
    };
    let full = format!("{prefix}{base}.safetensors");
    let half = format!("{prefix}{base}.fp16.safetensors");
    let full_index = format!("{prefix}{base}.safetensors.index.json");
    let half_index = format!("{prefix}{base}.safetensors.index.fp16.json");
    let order: [&String; 4] = if want_half {
        [&half, &half_index, &full, &full_index]
    } else {
        [&full, &full_index, &half, &half_index]
    };
    for rel in order {
        if !store.has(rel) {
            continue;
        }
        if !rel.ends_with(".json") {
            return Ok(vec![store.get(rel)?]);
        }
        let index: serde_json::Value = super::config::read_json(&store.get(rel)?)?;
        let shards: BTreeSet<String> = index["weight_map"]
            .as_object()
            .with_context(|| format!("`{rel}` has no weight_map"))?
            .values()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        return shards
            .iter()
            .map(|s| store.get(&format!("{prefix}{s}")))
            .collect();
    }
    bail!("no safetensors weights for `{component}` (looked for {full} and {half}; .bin checkpoints are not supported)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_case_insensitively() {
        assert_eq!(
            resolve_alias("SD15"),
            "stable-diffusion-v1-5/stable-diffusion-v1-5"
        );
        assert_eq!(resolve_alias("someone/else"), "someone/else");
    }

    #[test]
    fn prefers_fp16_variant_only_for_half() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("unet")).unwrap();
        for f in [
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let store = LocalDir(dir.path().to_path_buf());
        let half = weights(&store, "unet", "diffusion_pytorch_model", true).unwrap();
        assert!(half[0].ends_with("diffusion_pytorch_model.fp16.safetensors"));
        let full = weights(&store, "unet", "diffusion_pytorch_model", false).unwrap();
        assert!(full[0].ends_with("diffusion_pytorch_model.safetensors"));
        assert!(weights(&store, "vae", "diffusion_pytorch_model", false).is_err());
    }

    #[test]
    fn sharded_weights_follow_the_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("unet")).unwrap();
        std::fs::write(
            dir.path().join("unet/diffusion_pytorch_model.safetensors.index.json"),
            r#"{"weight_map": {"a": "s-00001.safetensors", "b": "s-00002.safetensors", "c": "s-00001.safetensors"}}"#,
        )
        .unwrap();
        for f in ["s-00001.safetensors", "s-00002.safetensors"] {
            std::fs::write(dir.path().join("unet").join(f), b"x").unwrap();
        }
        let store = LocalDir(dir.path().to_path_buf());
        let shards = weights(&store, "unet", "diffusion_pytorch_model", false).unwrap();
        assert_eq!(shards.len(), 2);
    }
}
