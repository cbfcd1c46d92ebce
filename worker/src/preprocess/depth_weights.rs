//! Where the Depth Anything V2 weights come from and how they are read.
//!
//! Two on-disk layouts are read, told apart by their key names:
//! - the original checkpoint's (`pretrained.*`, `depth_head.*`), as the
//!   `depth_anything_v2_vits.pth` released with the paper and its safetensors
//!   conversion `jeroenvlek/depth-anything-v2-safetensors` (the file Candle's
//!   example reads; the default);
//! - transformers' (`backbone.*`, `neck.*`, `head.*`), as
//!   `depth-anything/Depth-Anything-V2-Small-hf` (`model.safetensors` +
//!   `config.json`), renamed to the original names on load (the separate
//!   query/key/value projections concatenated into `qkv`).
//!
//! The shapes (width, blocks, MLP width, position grid, head channels) are read
//! from the weights. The head count and the four tapped blocks are not in the
//! weights: they come from a `config.json` beside them in transformers'
//! `DepthAnythingConfig` format (`backbone_config.num_attention_heads`,
//! `backbone_config.out_indices`, 1-based, and `backbone_config.layer_norm_eps`)
//! when there is one, else from the released models' table: 64-wide heads, and
//! blocks [2, 5, 8, 11] for 12 blocks (ViT-S, ViT-B), [4, 11, 17, 23] for 24
//! (ViT-L), [9, 19, 29, 39] for 40 (ViT-G).

use super::depth_net::DepthNetConfig;
use crate::model::source::{hub_store, FileStore};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The default weights: Depth Anything V2 Small (ViT-S, 24.8 M parameters,
/// 99 MB in f32), original layout.
pub const DEFAULT_DEPTH_REPO: &str = "jeroenvlek/depth-anything-v2-safetensors";
/// The file of [`DEFAULT_DEPTH_REPO`] (and the name looked for in a folder).
pub const DEFAULT_DEPTH_FILE: &str = "depth_anything_v2_vits.safetensors";

/// Where the depth model's weights are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepthSource {
    /// A `.safetensors` file, or a folder holding `model.safetensors` (or
    /// `depth_anything_v2_vits.safetensors`, or a single `.safetensors`),
    /// with an optional `config.json` beside it.
    Local(PathBuf),
    /// A Hugging Face hub repository (downloaded into the standard cache;
    /// honours HF_HOME, HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE).
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

impl Default for DepthSource {
    fn default() -> Self {
        DepthSource::Hub {
            repo: DEFAULT_DEPTH_REPO.to_string(),
            revision: None,
        }
    }
}

impl DepthSource {
    /// A path that exists is local; `owner/name` or `owner/name@revision`
    /// (optionally prefixed `hf://`) is a hub repository; anything else is
    /// taken as a local path (so that its absence is reported by [`Self::resolve`]).
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if Path::new(s).exists() {
            return DepthSource::Local(PathBuf::from(s));
        }
        let repo = s.strip_prefix("hf://").unwrap_or(s);
        let (name, revision) = match repo.split_once('@') {
            Some((n, r)) => (n, Some(r.to_string())),
            None => (repo, None),
        };
        let looks_like_repo = name.split('/').count() == 2
            && !name.starts_with(['.', '/', '~'])
            && !name.ends_with(".safetensors")
            && name.split('/').all(|p| !p.is_empty());
        if looks_like_repo {
            DepthSource::Hub {
                repo: name.to_string(),
                revision,
            }
        } else {
            DepthSource::Local(PathBuf::from(s))
        }
    }

    /// Finds (downloading when needed) the weights file and the optional config.
    pub fn resolve(&self) -> Result<DepthFiles> {
        match self {
            DepthSource::Local(p) => resolve_local(p),
            DepthSource::Hub { repo, revision } => {
                let rev = revision.as_deref().unwrap_or("main");
                let store = hub_store(repo, rev)?;
                let weights = ["model.safetensors", DEFAULT_DEPTH_FILE]
                    .into_iter()
                    .find(|f| store.has(f))
                    .with_context(|| {
                        format!("`{repo}` (revision {rev}) has neither model.safetensors nor {DEFAULT_DEPTH_FILE} (under HF_HUB_OFFLINE: neither is in the Hugging Face cache)")
                    })?;
                let config = store
                    .has("config.json")
                    .then(|| store.get("config.json"))
                    .transpose()?;
                Ok(DepthFiles {
                    weights: store.get(weights)?,
                    config,
                    source: format!("hf://{repo}@{rev}/{weights}"),
                })
            }
        }
    }
}

impl std::fmt::Display for DepthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DepthSource::Local(p) => write!(f, "{}", p.display()),
            DepthSource::Hub { repo, revision } => match revision {
                Some(r) => write!(f, "{repo}@{r}"),
                None => write!(f, "{repo}"),
            },
        }
    }
}

/// The files of a depth model on this machine.
#[derive(Debug, Clone)]
pub struct DepthFiles {
    pub weights: PathBuf,
    pub config: Option<PathBuf>,
    /// Human-readable origin (a path, or `hf://repo@revision/file`).
    pub source: String,
}

fn resolve_local(p: &Path) -> Result<DepthFiles> {
    if p.is_file() {
        let config = p
            .parent()
            .map(|d| d.join("config.json"))
            .filter(|c| c.is_file());
        return Ok(DepthFiles {
            weights: p.to_path_buf(),
            config,
            source: p.display().to_string(),
        });
    }
    if !p.is_dir() {
        bail!("depth model {} does not exist (give a .safetensors file, a folder, or a hub repository such as {DEFAULT_DEPTH_REPO})", p.display());
    }
    let mut weights = None;
    for name in ["model.safetensors", DEFAULT_DEPTH_FILE] {
        if p.join(name).is_file() {
            weights = Some(p.join(name));
            break;
        }
    }
    let weights = match weights {
        Some(w) => w,
        None => {
            let mut all: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            all.sort();
            match all.len() {
                1 => all.remove(0),
                0 => bail!("depth model folder {} has no .safetensors file", p.display()),
                _ => bail!("depth model folder {} has several .safetensors files and no model.safetensors: name the file", p.display()),
            }
        }
    };
    let config = Some(p.join("config.json")).filter(|c| c.is_file());
    Ok(DepthFiles {
        weights,
        config,
        source: p.display().to_string(),
    })
}

/// Reads the weights (any float dtype, on the CPU) under the original
/// names, whichever layout the file has. Errors name the file.
pub fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading the depth model weights {}", path.display()))?;
    if raw.keys().any(|k| k.starts_with("pretrained.")) {
        return Ok(raw);
    }
    if !raw.keys().any(|k| k.starts_with("backbone.embeddings.")) {
        bail!("{} is not a Depth Anything V2 checkpoint: it has neither `pretrained.*` (original) nor `backbone.embeddings.*` (transformers) weights", path.display());
    }
    let mut out = HashMap::new();
    let mut qkv: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
    for (k, t) in raw {
        match hf_to_original(&k) {
            Some((name, None)) => {
                out.insert(name, t);
            }
            Some((name, Some(part))) => qkv.entry(name).or_default()[part] = Some(t),
            None => {}
        }
    }
    for (name, parts) in qkv {
        let [Some(q), Some(k), Some(v)] = parts else {
            bail!("{}: `{name}` lacks one of query/key/value", path.display());
        };
        out.insert(name, Tensor::cat(&[q, k, v], 0)?);
    }
    Ok(out)
}

/// A transformers `DepthAnythingForDepthEstimation` key to the original
/// checkpoint's: the name, and for query/key/value the part (0, 1, 2) of
/// the concatenated `qkv` it is. `None` for keys the network does not use
/// (`mask_token`) and unknown ones.
pub fn hf_to_original(key: &str) -> Option<(String, Option<usize>)> {
    let plain = |s: String| Some((s, None));
    if let Some(rest) = key.strip_prefix("backbone.") {
        return match rest {
            "embeddings.cls_token" => plain("pretrained.cls_token".into()),
            "embeddings.position_embeddings" => plain("pretrained.pos_embed".into()),
            _ => {
                if let Some(p) = rest.strip_prefix("embeddings.patch_embeddings.projection.") {
                    return plain(format!("pretrained.patch_embed.proj.{p}"));
                }
                if let Some(p) = rest.strip_prefix("layernorm.") {
                    return plain(format!("pretrained.norm.{p}"));
                }
                let rest = rest.strip_prefix("encoder.layer.")?;
                let (i, p) = rest.split_once('.')?;
                let b = format!("pretrained.blocks.{i}");
                for (j, n) in ["query", "key", "value"].iter().enumerate() {
                    if let Some(s) = p.strip_prefix(&format!("attention.attention.{n}.")) {
                        return Some((format!("{b}.attn.qkv.{s}"), Some(j)));
                    }
                }
                let p = match p {
                    "layer_scale1.lambda1" => "ls1.gamma".to_string(),
                    "layer_scale2.lambda1" => "ls2.gamma".to_string(),
                    _ => match p.strip_prefix("attention.output.dense.") {
                        Some(s) => format!("attn.proj.{s}"),
                        None if p.starts_with("norm1.")
                            || p.starts_with("norm2.")
                            || p.starts_with("mlp.fc1.")
                            || p.starts_with("mlp.fc2.") =>
                        {
                            p.to_string()
                        }
                        None => return None,
                    },
                };
                plain(format!("{b}.{p}"))
            }
        };
    }
    let h = "depth_head";
    if let Some(rest) = key.strip_prefix("neck.reassemble_stage.layers.") {
        let (i, p) = rest.split_once('.')?;
        if let Some(s) = p.strip_prefix("projection.") {
            return plain(format!("{h}.projects.{i}.{s}"));
        }
        let s = p.strip_prefix("resize.")?;
        return plain(format!("{h}.resize_layers.{i}.{s}"));
    }
    if let Some(rest) = key.strip_prefix("neck.convs.") {
        let (i, p) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        return plain(format!("{h}.scratch.layer{}_rn.{p}", i + 1));
    }
    if let Some(rest) = key.strip_prefix("neck.fusion_stage.layers.") {
        // transformers fuses coarse to fine: its layer 0 is refinenet4.
        let (j, p) = rest.split_once('.')?;
        let r = 4usize.checked_sub(j.parse().ok()?)?;
        let b = format!("{h}.scratch.refinenet{r}");
        if let Some(s) = p.strip_prefix("projection.") {
            return plain(format!("{b}.out_conv.{s}"));
        }
        let (unit, p) = p.split_once('.')?;
        let u = unit.strip_prefix("residual_layer")?;
        let (conv, s) = p.split_once('.')?;
        let c = conv.strip_prefix("convolution")?;
        return plain(format!("{b}.resConfUnit{u}.conv{c}.{s}"));
    }
    let (conv, s) = key.strip_prefix("head.")?.split_once('.')?;
    let name = match conv {
        "conv1" => "output_conv1",
        "conv2" => "output_conv2.0",
        "conv3" => "output_conv2.2",
        _ => return None,
    };
    plain(format!("{h}.scratch.{name}.{s}"))
}

/// The network's shapes from its weights (original names) and optional
/// `config.json` (see the module documentation).
pub fn config_from(
    weights: &HashMap<String, Tensor>,
    config: Option<&Path>,
    path: &Path,
) -> Result<DepthNetConfig> {
    let dims = |k: &str| -> Result<Vec<usize>> {
        weights.get(k).map(|t| t.dims().to_vec()).with_context(|| {
            format!(
                "{} has no `{k}`: not a complete Depth Anything V2 checkpoint",
                path.display()
            )
        })
    };
    let embed_dim = dims("pretrained.cls_token")?[2];
    let depth = (0..)
        .take_while(|i| weights.contains_key(&format!("pretrained.blocks.{i}.norm1.weight")))
        .count();
    let positions = dims("pretrained.pos_embed")?[1] - 1;
    let pos_grid = (positions as f64).sqrt().round() as usize;
    if pos_grid * pos_grid != positions {
        bail!(
            "{}: {positions} position embeddings do not form a square grid",
            path.display()
        );
    }
    let out: Vec<usize> = (0..4)
        .map(|i| dims(&format!("depth_head.projects.{i}.weight")).map(|d| d[0]))
        .collect::<Result<_>>()?;
    let mut cfg = DepthNetConfig {
        embed_dim,
        depth,
        num_heads: embed_dim / 64,
        mlp_hidden: dims("pretrained.blocks.0.mlp.fc1.weight")?[0],
        patch_size: dims("pretrained.patch_embed.proj.weight")?[2],
        pos_grid,
        layer_ids: match depth {
            12 => [2, 5, 8, 11],
            24 => [4, 11, 17, 23],
            40 => [9, 19, 29, 39],
            _ => [usize::MAX; 4],
        },
        out_channels: [out[0], out[1], out[2], out[3]],
        features: dims("depth_head.scratch.layer1_rn.weight")?[0],
        head_hidden: dims("depth_head.scratch.output_conv2.0.weight")?[0],
        layer_norm_eps: 1e-6,
    };
    if let Some(config) = config {
        apply_config_json(&mut cfg, config)?;
    }
    if cfg.layer_ids.contains(&usize::MAX)
        || cfg.num_heads == 0
        || !cfg.embed_dim.is_multiple_of(cfg.num_heads)
    {
        bail!("{}: a Depth Anything model with {depth} blocks of width {embed_dim} is not a released size; put its transformers config.json (backbone_config.num_attention_heads, out_indices) beside the weights", path.display());
    }
    if cfg.layer_ids.iter().any(|&i| i >= depth) {
        bail!(
            "{}: tapped blocks {:?} exceed the {depth} blocks",
            path.display(),
            cfg.layer_ids
        );
    }
    Ok(cfg)
}

/// Reads heads, tapped blocks and LayerNorm eps from a transformers
/// `DepthAnythingConfig`; a `config.json` of another model type is ignored.
fn apply_config_json(cfg: &mut DepthNetConfig, path: &Path) -> Result<()> {
    let v: serde_json::Value = crate::model::config::read_json(path)?;
    if v.get("model_type").and_then(|m| m.as_str()) != Some("depth_anything") {
        return Ok(());
    }
    if let Some(t) = v.get("depth_estimation_type").and_then(|t| t.as_str()) {
        if t != "relative" {
            bail!("{}: depth_estimation_type `{t}` is not supported (only relative depth models make near-is-bright control maps)", path.display());
        }
    }
    let b = &v["backbone_config"];
    if let Some(h) = b.get("num_attention_heads").and_then(|h| h.as_u64()) {
        cfg.num_heads = h as usize;
    }
    if let Some(eps) = b.get("layer_norm_eps").and_then(|e| e.as_f64()) {
        cfg.layer_norm_eps = eps;
    }
    if let Some(idx) = b.get("out_indices").and_then(|o| o.as_array()) {
        let ids: Vec<usize> = idx
            .iter()
            .map(|i| i.as_u64().filter(|&i| i >= 1).map(|i| i as usize - 1))
            .collect::<Option<_>>()
            .with_context(|| {
                format!(
                    "{}: backbone_config.out_indices must be positive integers",
                    path.display()
                )
            })?;
        cfg.layer_ids = ids.try_into().map_err(|ids: Vec<usize>| {
            anyhow::anyhow!(
                "{}: backbone_config.out_indices must name 4 blocks, got {ids:?}",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Converts weights to `dtype` on `device` for the network's VarBuilder.
pub(crate) fn var_builder(
    weights: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> candle_nn::VarBuilder<'static> {
    candle_nn::VarBuilder::from_tensors(weights, dtype, device)
}
