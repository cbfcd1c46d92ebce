//! Where a ControlNet's files are: a folder, a single file (converted once
//! into the cache), or a hub repository.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::model::config::UNetConfig;
use crate::model::{bundled, single_file, source};

/// `--controlnet SPEC`: its name and its path (a folder or a single file);
/// a hub repository is downloaded into the Hugging Face cache first.
/// `half`: prefer the fp16 variant of a hub repository's weights.
pub fn resolve(spec: &str, half: bool) -> Result<(String, PathBuf)> {
    let path = Path::new(spec);
    if path.exists() {
        let name = stem(path).context("a path without a name")?;
        return Ok((name, path.to_path_buf()));
    }
    let looks_like_repo = spec.split('/').count() == 2 && !spec.starts_with(['.', '/']);
    if !looks_like_repo {
        bail!("no such file or folder (nor a hub repository `owner/name`)");
    }
    let folder = source::hub_controlnet(spec, half)?;
    let name = spec.rsplit('/').next().unwrap_or(spec).to_string();
    Ok((name, folder))
}

/// `--controlnet-dir DIR`: every ControlNet folder (one holding a
/// `config.json`) and `.safetensors` file in it, by name, sorted.
pub fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("--controlnet-dir {}: cannot list it", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let candidate = if path.is_dir() {
            path.join("config.json").is_file()
        } else {
            single_file::is_single_file(&path)
        };
        if let (true, Some(name)) = (candidate, stem(&path)) {
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The diffusers folder of a ControlNet at `path`: the folder itself, or a
/// single file's conversion in the cache (made on first use; what the file
/// does not say, such as attention heads, is taken from `unet`, the loaded
/// model's UNet config).
pub fn folder(path: &Path, unet: Option<&UNetConfig>) -> Result<PathBuf> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    single_file::controlnet::converted_controlnet_folder(path, unet, &bundled::cache_root())
}

/// A folder's name, or a file's name without its extension.
fn stem(path: &Path) -> Option<String> {
    let name = if path.is_dir() {
        path.canonicalize().ok()?.file_name()?.to_owned()
    } else {
        path.file_stem()?.to_owned()
    };
    Some(name.to_string_lossy().into_owned())
}
