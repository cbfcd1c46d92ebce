//! The upscalers a worker offers: the built-in resamplers and the model files
//! of `--upscaler-dir` (`.safetensors`, `.pth`; searched one level deep, read
//! again on each listing so new files need no restart). Each file is
//! detected once per version (size and modification time) and the model in
//! use is kept loaded (one at a time: they are small, 1-70 MB).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;
use sd_worker_sdk::upscale::BUILTIN_UPSCALERS;
use sd_worker_sdk::UpscalerInfo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::Upscaler;

/// A file's version: its size and modification time.
type Stamp = (u64, Option<SystemTime>);

/// What detecting a file found.
#[derive(Clone)]
struct Detected {
    stamp: Stamp,
    /// (architecture, factor, size multiple, parameters), or why it is not
    /// an upscaler.
    found: Result<(&'static str, usize, usize, u64), String>,
}

/// The worker's upscalers.
pub struct UpscalerRegistry {
    dir: Option<PathBuf>,
    device: Device,
    dtype: DType,
    detected: Mutex<HashMap<PathBuf, Detected>>,
    loaded: Mutex<Option<(PathBuf, Stamp, Arc<Upscaler>)>>,
}

impl std::fmt::Debug for UpscalerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpscalerRegistry({:?})", self.dir)
    }
}

/// An upscaler a request chose.
#[derive(Clone)]
pub enum UpscalerChoice {
    /// Lanczos (3 lobes) or nearest.
    Builtin(FilterType),
    /// A model of the registry, loaded when the job runs.
    Model(ModelHandle),
}

impl std::fmt::Debug for UpscalerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpscalerChoice::Builtin(filter) => write!(f, "Builtin({filter:?})"),
            UpscalerChoice::Model(m) => write!(f, "Model({})", m.name),
        }
    }
}

impl PartialEq for UpscalerChoice {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (UpscalerChoice::Builtin(a), UpscalerChoice::Builtin(b)) => a == b,
            (UpscalerChoice::Model(a), UpscalerChoice::Model(b)) => a.path == b.path,
            _ => false,
        }
    }
}

/// A model upscaler of the registry, by file.
#[derive(Clone)]
pub struct ModelHandle {
    pub name: String,
    pub path: PathBuf,
    /// The model's own factor.
    pub scale: usize,
    /// Sides are padded to a multiple of this (tiles too).
    pub multiple: usize,
    registry: Arc<UpscalerRegistry>,
}

impl ModelHandle {
    /// The network, loaded now unless it is the one in memory.
    pub fn load(&self) -> Result<Arc<Upscaler>> {
        self.registry.load(&self.path)
    }
}

/// Model tiles of the hires fix's pixel upscale (input pixels a side, overlap).
const HIRES_TILE: (usize, usize) = (512, 32);

impl UpscalerChoice {
    /// `img` upscaled and resized to exactly `w` x `h`: a model at its own
    /// factor (in the hires fix's tiles), then Lanczos to the size; a
    /// built-in directly.
    pub fn resize(&self, img: &RgbImage, w: u32, h: u32) -> Result<RgbImage> {
        self.resize_tiled(img, w, h, HIRES_TILE.0, HIRES_TILE.1, &mut |_, _| Ok(()))
    }

    /// [`Self::resize`] with a model's tiles of `tile` input pixels (0:
    /// whole) and `overlap`, calling `on_tile(done, total)` after each (a
    /// built-in is one step); an `Err` from it stops the work and is returned.
    pub fn resize_tiled(
        &self,
        img: &RgbImage,
        w: u32,
        h: u32,
        tile: usize,
        overlap: usize,
        on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<RgbImage> {
        match self {
            UpscalerChoice::Builtin(filter) => {
                let out = image::imageops::resize(img, w, h, *filter);
                on_tile(1, 1)?;
                Ok(out)
            }
            UpscalerChoice::Model(m) => {
                let net = m.load()?;
                let big = run_model(&net, img, tile, overlap, on_tile)?;
                Ok(if big.dimensions() == (w, h) {
                    big
                } else {
                    image::imageops::resize(&big, w, h, FilterType::Lanczos3)
                })
            }
        }
    }
}

/// `img` through `net` at its factor, in tiles (`tile` 0: whole), with
/// `on_tile(done, total)` after each (an `Err` stops it).
pub fn run_model(
    net: &Upscaler,
    img: &RgbImage,
    tile: usize,
    overlap: usize,
    on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
    let x = Tensor::from_vec(data, (h as usize, w as usize, 3), &Device::Cpu)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?;
    let y = net.upscale_tiled(&x, tile, overlap, on_tile)?;
    let (_, _, oh, ow) = y.dims4()?;
    let raw: Vec<u8> = (y.squeeze(0)?.permute((1, 2, 0))? * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1()?;
    RgbImage::from_raw(ow as u32, oh as u32, raw).context("the upscaler gave a wrong size")
}

impl UpscalerRegistry {
    /// The built-ins, and `dir`'s models (None: built-ins only) run on
    /// `device`: f32 on the CPU, the worker's `dtype` elsewhere.
    pub fn new(dir: Option<PathBuf>, device: &Device, dtype: DType) -> Self {
        Self {
            dir,
            device: device.clone(),
            dtype: if device.is_cpu() { DType::F32 } else { dtype },
            detected: Mutex::new(HashMap::new()),
            loaded: Mutex::new(None),
        }
    }

    /// The built-ins then every model file (by name), each detected once
    /// per version; files that are not upscalers are left out (and logged).
    pub fn list(&self) -> Vec<UpscalerInfo> {
        let mut out: Vec<UpscalerInfo> = BUILTIN_UPSCALERS
            .iter()
            .map(|b| UpscalerInfo {
                name: b.name.to_string(),
                kind: "builtin".into(),
                label: Some(b.label.to_string()),
                architecture: None,
                scale: None,
                parameters: None,
                size_bytes: None,
            })
            .collect();
        for (name, path, stamp) in self.files() {
            if let Ok((arch, scale, _, params)) = self.detect(&path, stamp).found {
                out.push(UpscalerInfo {
                    name,
                    kind: "model".into(),
                    label: None,
                    architecture: Some(arch.into()),
                    scale: Some(scale as u32),
                    parameters: Some(params),
                    size_bytes: Some(stamp.0),
                });
            }
        }
        out
    }

    /// The upscaler `name` names (a built-in, any case; or a model file's
    /// stem). Errors: the reason, listing the names (the caller names the
    /// field).
    pub fn resolve(self: &Arc<Self>, name: &str) -> Result<UpscalerChoice, String> {
        match name.to_ascii_lowercase().as_str() {
            "lanczos" => return Ok(UpscalerChoice::Builtin(FilterType::Lanczos3)),
            "nearest" => return Ok(UpscalerChoice::Builtin(FilterType::Nearest)),
            _ => {}
        }
        let files = self.files();
        let Some((stem, path, stamp)) = files.iter().find(|(n, _, _)| n == name) else {
            let names: Vec<String> = self.list().into_iter().map(|u| u.name).collect();
            return Err(format!(
                "unknown upscaler `{name}`; one of: {}",
                names.join(", ")
            ));
        };
        match self.detect(path, *stamp).found {
            Ok((_, scale, multiple, _)) => Ok(UpscalerChoice::Model(ModelHandle {
                name: stem.clone(),
                path: path.clone(),
                scale,
                multiple,
                registry: self.clone(),
            })),
            Err(reason) => Err(format!("`{name}` cannot be used: {reason}")),
        }
    }

    /// (stem, path, stamp) of each model file of the folder, by name.
    fn files(&self) -> Vec<(String, PathBuf, Stamp)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut visit = |d: &Path| -> Vec<PathBuf> {
            let mut subdirs = Vec::new();
            for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    subdirs.push(path);
                    continue;
                }
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if !matches!(ext.as_deref(), Some("safetensors" | "pth" | "pt")) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((stem, path, (meta.len(), meta.modified().ok())));
            }
            subdirs
        };
        for sub in visit(dir) {
            visit(&sub);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    fn detect(&self, path: &Path, stamp: Stamp) -> Detected {
        let mut seen = self.detected.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = seen.get(path).filter(|d| d.stamp == stamp) {
            return d.clone();
        }
        let found = super::load::read_state_dict(path)
            .and_then(super::arch::detect)
            .map(|(arch, tensors)| {
                let params = tensors.values().map(|t| t.elem_count() as u64).sum();
                (arch.name(), arch.scale(), arch.size_multiple(), params)
            })
            .map_err(|e| format!("{e:#}"));
        if let Err(reason) = &found {
            tracing::warn!(file = %path.display(), %reason, "not an upscaler; left out");
        }
        let d = Detected { stamp, found };
        seen.insert(path.to_path_buf(), d.clone());
        d
    }

    /// The model of `path`, loaded unless it is the one in memory (which it
    /// replaces).
    fn load(&self, path: &Path) -> Result<Arc<Upscaler>> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("upscaler {} is gone", path.display()))?;
        let stamp = (meta.len(), meta.modified().ok());
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, s, net)) = &*loaded {
            if p == path && *s == stamp {
                return Ok(net.clone());
            }
        }
        // The old one goes first: at most one model in memory.
        *loaded = None;
        let net = Arc::new(Upscaler::load_with_dtype(path, &self.device, self.dtype)?);
        *loaded = Some((path.to_path_buf(), stamp, net.clone()));
        Ok(net)
    }
}
