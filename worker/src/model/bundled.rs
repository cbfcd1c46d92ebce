//! The default model compiled into the binary, so `sd-worker` with no model
//! flag works offline on a fresh machine and draws what it is asked for.
//!
//! `sd-demo-shapes` (committed under `worker/models/sd-demo-shapes/`, with its
//! model card) is a small Stable Diffusion model in the diffusers layout (CLIP
//! text encoder, UNet2DConditionModel with cross-attention, AutoencoderKL)
//! that the project trained on images it renders itself: simple coloured
//! shapes on plain backgrounds (`training/` reproduces it). Its files are
//! written once to a cache folder and loaded from there like any other
//! diffusers folder: nothing in the worker knows it is special.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub const NAME: &str = "sd-demo-shapes";

macro_rules! bundled {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../../models/sd-demo-shapes/", $path)) as &[u8])),*]
    };
}

/// Every file of the bundled model the worker loads, by its path inside the
/// model folder (the folder's model card and training record stay out).
pub const FILES: &[(&str, &[u8])] = bundled![
    "model_index.json",
    "scheduler/scheduler_config.json",
    "sd-worker.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// Files of the committed folder that are documentation, not model.
#[cfg(test)]
const NOT_BUNDLED: &[&str] = &["README.md", "training.json"];

/// Content hash of the bundle, so a changed bundle never reuses stale files.
fn digest() -> String {
    let mut h = Sha256::new();
    for (path, bytes) in FILES {
        h.update(path.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where bundled models are unpacked (and single-file checkpoints converted):
/// `$SD_WORKER_CACHE`, else the user's cache folder, else the temp folder.
pub fn cache_root() -> PathBuf {
    std::env::var_os("SD_WORKER_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("sd-worker")))
        .unwrap_or_else(|| std::env::temp_dir().join("sd-worker"))
}

/// Returns the folder holding the bundled model, writing it on first use.
/// Safe against concurrent workers: files go to a private temp folder that is
/// renamed into place in one step.
pub fn materialize() -> Result<PathBuf> {
    let parent = cache_root().join("bundled").join(digest());
    let target = parent.join(NAME);
    if target.join(".complete").is_file() {
        return Ok(target);
    }
    let staging = parent.join(format!(
        ".staging-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let staged = staging.join(NAME);
    for (path, bytes) in FILES {
        let file = staged.join(path);
        std::fs::create_dir_all(file.parent().expect("bundled paths have a parent"))
            .with_context(|| format!("creating {}", staged.display()))?;
        std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    }
    std::fs::write(staged.join(".complete"), b"")?;
    if std::fs::rename(&staged, &target).is_err() && !target.join(".complete").is_file() {
        anyhow::bail!("could not place the bundled model at {}", target.display());
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The bundle is exactly the committed folder (less its documentation), so
    /// retraining into the folder cannot leave a file behind or half-updated.
    #[test]
    fn bundle_is_the_committed_folder() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(NAME);
        let mut on_disk = Vec::new();
        collect(&root, &root, &mut on_disk);
        on_disk.retain(|p| !NOT_BUNDLED.contains(&p.as_str()));
        on_disk.sort();
        let bundled: Vec<&str> = FILES.iter().map(|(p, _)| *p).collect();
        assert_eq!(on_disk, bundled, "update FILES in bundled.rs");
        for (path, bytes) in FILES {
            assert!(std::fs::read(root.join(path)).unwrap() == *bytes, "{path}");
        }
        assert!(
            root.join("README.md").is_file(),
            "the model card is missing"
        );
    }

    fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
}
