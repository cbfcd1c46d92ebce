//! The ControlNets a worker offers: those named with `--controlnet` (loaded
//! at start and kept) and those found in `--controlnet-dir` (listed at start,
//! loaded on first use and kept in a least-recently-used cache bounded by
//! `--controlnet-cache-mb`). Each is a diffusers `ControlNetModel` folder, a
//! hub repository holding one, or a single-file (LDM-layout) `.safetensors`,
//! converted once into the cache. Only those for the loaded model's family
//! are offered; naming another is refused with its family.

mod source;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use sd_worker_sdk::{ControlNetInfo, MemoryEstimate};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::config::UNetConfig;
use crate::model::controlnet::{self, ControlNet, ControlNetConfig};
use crate::model::memory::Workload;
use crate::model::ModelMeta;

/// Where ControlNets come from, as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct ControlNetOptions {
    /// `--controlnet`: folders, single files or hub repositories, loaded at start.
    pub models: Vec<String>,
    /// `--controlnet-dir`: a folder of ControlNet folders and single files.
    pub dir: Option<PathBuf>,
    /// `--controlnet-cache-mb`: the most memory `--controlnet-dir` ControlNets
    /// kept loaded take together (the one in use is always kept).
    pub cache_bytes: u64,
}

/// One ControlNet on offer.
#[derive(Debug)]
struct Entry {
    name: String,
    folder: PathBuf,
    config: ControlNetConfig,
    /// Why it cannot steer the loaded model, if it cannot.
    incompatible: Option<String>,
    weights_bytes: u64,
    working_bytes: u64,
}

/// Loaded ControlNets, shared by every handle.
struct Loaded {
    device: Device,
    dtype: DType,
    flash_attn: bool,
    budget: u64,
    /// `--controlnet` ones: never evicted.
    pinned: BTreeMap<String, Arc<ControlNet>>,
    /// `--controlnet-dir` ones, least recently used first.
    cached: Vec<(String, Arc<ControlNet>, u64)>,
}

/// The ControlNets of this worker.
pub struct ControlNetRegistry {
    entries: BTreeMap<String, Arc<Entry>>,
    loaded: Arc<Mutex<Loaded>>,
}

impl std::fmt::Debug for ControlNetRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.keys()).finish()
    }
}

/// A validated reference to one ControlNet; [`ControlNetHandle::load`] gives
/// the network (loading it on first use).
#[derive(Clone)]
pub struct ControlNetHandle {
    entry: Arc<Entry>,
    loaded: Arc<Mutex<Loaded>>,
}

impl std::fmt::Debug for ControlNetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlNet({})", self.entry.name)
    }
}

impl PartialEq for ControlNetHandle {
    fn eq(&self, other: &Self) -> bool {
        self.entry.name == other.entry.name
    }
}

impl Default for ControlNetRegistry {
    fn default() -> Self {
        Self::empty()
    }
}

impl ControlNetRegistry {
    /// No ControlNets (a worker started without any).
    pub fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
            loaded: Arc::new(Mutex::new(Loaded {
                device: Device::Cpu,
                dtype: DType::F32,
                flash_attn: false,
                budget: 0,
                pinned: BTreeMap::new(),
                cached: Vec::new(),
            })),
        }
    }

    /// Finds every ControlNet of `opts` and checks it against the loaded
    /// model (`unet`: its UNet's config; None for SD 3, which has no UNet
    /// ControlNets); loads the `--controlnet` ones.
    ///
    /// Errors: a `--controlnet` that cannot be read, is not a ControlNet, or
    /// is for another model family (it was asked for explicitly); two
    /// ControlNets of one name.
    pub fn build(
        opts: &ControlNetOptions,
        meta: &ModelMeta,
        unet: Option<&UNetConfig>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let registry = Self {
            entries: BTreeMap::new(),
            loaded: Arc::new(Mutex::new(Loaded {
                device: device.clone(),
                dtype,
                flash_attn: cfg!(feature = "flash-attn") && device.is_cuda(),
                budget: opts.cache_bytes,
                pinned: BTreeMap::new(),
                cached: Vec::new(),
            })),
        };
        let mut registry = registry;
        for spec in &opts.models {
            let (name, folder) = source::resolve(spec, dtype != DType::F32)
                .with_context(|| format!("--controlnet {spec}"))?;
            let folder =
                source::folder(&folder, unet).with_context(|| format!("--controlnet {spec}"))?;
            let entry = registry
                .add(name, folder, meta, unet)
                .with_context(|| format!("--controlnet {spec}"))?;
            if let Some(why) = &entry.incompatible {
                bail!("--controlnet {spec}: {why}");
            }
            let net = registry.load_entry(&entry)?;
            registry.lock().pinned.insert(entry.name.clone(), net);
        }
        if let Some(dir) = &opts.dir {
            for (name, path) in source::list_dir(dir)? {
                let added = source::folder(&path, unet)
                    .and_then(|folder| registry.add(name.clone(), folder, meta, unet));
                match added {
                    Ok(entry) => {
                        if let Some(why) = &entry.incompatible {
                            tracing::info!(controlnet = %name, "not offered: {why}");
                        }
                    }
                    // One unreadable file must not stop the worker: it is
                    // left out and said so.
                    Err(e) => tracing::warn!(controlnet = %name, "left out: {e:#}"),
                }
            }
        }
        Ok(registry)
    }

    fn add(
        &mut self,
        name: String,
        folder: PathBuf,
        meta: &ModelMeta,
        unet: Option<&UNetConfig>,
    ) -> Result<Arc<Entry>> {
        if let Some(other) = self.entries.get(&name) {
            bail!(
                "two ControlNets are named `{name}` ({} and {}); rename one",
                other.folder.display(),
                folder.display()
            );
        }
        if folder.join("model_index.json").is_file() || folder.join("unet").is_dir() {
            bail!(
                "{} is a Stable Diffusion model folder, not a ControlNet (a ControlNet folder holds a ControlNetModel config.json and its weights)",
                folder.display()
            );
        }
        let (config, weights) = controlnet::files_in(&folder)?;
        let dtype = self.lock().dtype;
        let family = config.family();
        let incompatible = match unet {
            None => Some(format!(
                "it is a {} ControlNet and this worker serves a {} model, which takes no UNet ControlNets",
                family.name(),
                meta.family.name()
            )),
            Some(unet) => config.check_compatible(unet).err().map(|e| format!("{e:#}")),
        };
        let side = (meta.native_height / meta.vae_scale_factor) as usize;
        let entry = Arc::new(Entry {
            weights_bytes: controlnet::weights_bytes(&[weights], dtype)?,
            working_bytes: controlnet::controlnet_working_bytes(
                &config,
                Workload {
                    latent_height: side,
                    latent_width: side,
                    batch: 2,
                    dtype_bytes: dtype.size_in_bytes(),
                },
            ),
            name: name.clone(),
            folder,
            config,
            incompatible,
        });
        self.entries.insert(name, entry.clone());
        Ok(entry)
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        lock(&self.loaded)
    }

    fn load_entry(&self, entry: &Entry) -> Result<Arc<ControlNet>> {
        let (dtype, device, flash) = {
            let l = self.lock();
            (l.dtype, l.device.clone(), l.flash_attn)
        };
        load_net(entry, dtype, &device, flash)
    }

    /// The ControlNets a request may name, as `GET /v1/info` lists them.
    pub fn infos(&self) -> Vec<ControlNetInfo> {
        let loaded = self.lock();
        self.entries
            .values()
            .filter(|e| e.incompatible.is_none())
            .map(|e| ControlNetInfo {
                name: e.name.clone(),
                family: e.config.family().name().into(),
                loaded: loaded.pinned.contains_key(&e.name)
                    || loaded.cached.iter().any(|(n, _, _)| n == &e.name),
                memory: MemoryEstimate {
                    weights_bytes: e.weights_bytes,
                    activations_bytes: e.working_bytes,
                    total_bytes: e.weights_bytes + e.working_bytes,
                },
            })
            .collect()
    }

    /// The ControlNet called `name`, for a request.
    ///
    /// Errors (the message, for the field at fault): no such name (the
    /// available ones listed), or one for another family.
    pub fn resolve(&self, name: &str) -> Result<ControlNetHandle, String> {
        let Some(entry) = self.entries.get(name) else {
            let available: Vec<&str> = self
                .entries
                .values()
                .filter(|e| e.incompatible.is_none())
                .map(|e| e.name.as_str())
                .collect();
            return Err(if available.is_empty() {
                format!("unknown ControlNet `{name}`: this worker has none (start it with --controlnet or --controlnet-dir)")
            } else {
                format!(
                    "unknown ControlNet `{name}`; one of: {}",
                    available.join(", ")
                )
            });
        };
        if let Some(why) = &entry.incompatible {
            return Err(format!(
                "ControlNet `{name}` does not fit this model: {why}"
            ));
        }
        Ok(ControlNetHandle {
            entry: entry.clone(),
            loaded: self.loaded.clone(),
        })
    }
}

impl ControlNetHandle {
    /// The name a request gave (the folder's, or the file's stem).
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The network, loaded now if it is not in memory; loading may evict the
    /// least recently used `--controlnet-dir` ControlNets beyond the budget
    /// (never this one). Call it on the generation thread.
    ///
    /// Errors: the weights cannot be read or built.
    pub fn load(&self) -> Result<Arc<ControlNet>> {
        let name = &self.entry.name;
        let (dtype, device, flash) = {
            let mut l = lock(&self.loaded);
            if let Some(net) = l.pinned.get(name) {
                return Ok(net.clone());
            }
            if let Some(i) = l.cached.iter().position(|(n, _, _)| n == name) {
                let hit = l.cached.remove(i);
                let net = hit.1.clone();
                l.cached.push(hit);
                return Ok(net);
            }
            (l.dtype, l.device.clone(), l.flash_attn)
        };
        let net = load_net(&self.entry, dtype, &device, flash)?;
        let mut l = lock(&self.loaded);
        l.cached
            .push((name.clone(), net.clone(), self.entry.weights_bytes));
        let mut total: u64 = l.cached.iter().map(|(_, _, b)| b).sum();
        while total > l.budget && l.cached.len() > 1 {
            let (evicted, _, bytes) = l.cached.remove(0);
            tracing::info!(controlnet = %evicted, "unloaded (least recently used)");
            total -= bytes;
        }
        Ok(net)
    }
}

fn load_net(entry: &Entry, dtype: DType, device: &Device, flash: bool) -> Result<Arc<ControlNet>> {
    let started = std::time::Instant::now();
    let (_, net) = controlnet::load(&entry.folder, dtype, device, flash)
        .with_context(|| format!("loading ControlNet `{}`", entry.name))?;
    tracing::info!(
        controlnet = %entry.name,
        load_ms = started.elapsed().as_millis() as u64,
        "ControlNet loaded"
    );
    Ok(Arc::new(net))
}

fn lock(m: &Mutex<Loaded>) -> MutexGuard<'_, Loaded> {
    // A panic while holding the lock leaves the cache consistent (every
    // change is one push or remove).
    m.lock().unwrap_or_else(|e| e.into_inner())
}
