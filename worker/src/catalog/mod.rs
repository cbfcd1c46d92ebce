//! The LoRA and textual-inversion embedding files of `--lora-dir` and
//! `--embeddings-dir`: what `GET /v1/loras` and `GET /v1/embeddings` list and
//! what requests name.
//!
//! A folder is walked again on every listing and every lookup (a `stat` per
//! file), so files added, replaced or removed are seen without a restart. Only
//! the header of a new or changed `.safetensors` file is read (never its
//! tensors), and its hash is computed once per (path, size, modification
//! time). Folders are walked recursively, as A1111 does, following links
//! (at most 16 levels deep) and skipping hidden entries. Pickles (`.pt`,
//! `.ckpt`, `.bin`, `.pth`) are never opened: unpickling can run code. They
//! are left out of the listings with one log line each, and a request naming
//! one is refused with that reason.

pub mod embeddings;
pub mod hashes;
pub mod header;
pub mod lora;
pub mod tags;

pub use embeddings::{EmbeddingCatalog, EmbeddingFile};
pub use lora::{LoraCatalog, LoraFile};

use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use tracing::warn;

/// Deepest folder level walked under a catalog's root.
const MAX_DEPTH: usize = 16;
/// Extensions of pickled files, refused (they can run code when loaded).
const PICKLE_EXTENSIONS: [&str; 4] = ["pt", "ckpt", "bin", "pth"];

/// What identifies one version of a file: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// A kind of catalog file, read from its safetensors header.
pub trait CatalogKind: Clone + Send + Sync + 'static {
    /// "LoRA", "embedding": for messages.
    const WHAT: &'static str;
    /// Reads what the catalog needs from the file's header. Errors say why
    /// the file cannot be used.
    fn read(path: &Path) -> Result<Self>;
    /// Its A1111 short hash (see [`hashes`]); reads the file.
    fn hash(&self, path: &Path) -> Result<String>;
    /// How the worker's listing (`GET /v1/loras`, `/v1/embeddings`) shows it.
    type Info: Send + 'static;
    fn listed(&self, name: &str, size_bytes: u64, hash: &str) -> Self::Info;
}

/// One file of a catalog.
#[derive(Debug, Clone)]
pub struct Found<T> {
    /// The name requests use: the file stem, or its path under the root
    /// without the extension (with `/`) when two files share the stem.
    pub name: String,
    pub path: PathBuf,
    pub stamp: Stamp,
    /// What it holds, or why it cannot be used.
    pub read: std::result::Result<T, String>,
    /// A1111's short hash, once computed.
    pub hash: Option<String>,
}

/// The answer to a lookup by name.
#[derive(Debug, Clone)]
pub enum Lookup<T> {
    /// Usable, with its hash computed.
    Found(Found<T>),
    /// No usable file by that name; `available` lists the usable names.
    Unknown { available: Vec<String> },
    /// A pickle of that name, which is refused.
    Pickle(PathBuf),
    /// A file of that name that cannot be used, and why.
    Broken { path: PathBuf, reason: String },
}

struct Cached<T> {
    stamp: Stamp,
    read: std::result::Result<T, String>,
    hash: Option<String>,
}

/// A folder of one kind of file, rescanned on each use.
pub struct Folder<T> {
    root: PathBuf,
    cache: Mutex<HashMap<PathBuf, Cached<T>>>,
    pickles_logged: Mutex<HashSet<PathBuf>>,
}

impl<T: CatalogKind> Folder<T> {
    /// A catalog of `root`, which must be a folder.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!("{}: not a folder", root.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
            pickles_logged: Mutex::new(HashSet::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every `.safetensors` file now under the root (usable or not, without
    /// hashes computed), sorted by name, and the pickles.
    pub fn scan(&self) -> (Vec<Found<T>>, Vec<PathBuf>) {
        let mut files = Vec::new();
        walk(&self.root, &self.root, 0, &mut files);
        let mut pickles = Vec::new();
        let mut found = Vec::new();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashSet::new();
        for (rel, path, stamp) in files {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
                let mut logged = self
                    .pickles_logged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if logged.insert(path.clone()) {
                    warn!(file = %path.display(), "{} skipped: a pickle can run code when loaded; convert it to .safetensors", T::WHAT);
                }
                pickles.push(path);
                continue;
            }
            if ext != "safetensors" {
                continue;
            }
            seen.insert(path.clone());
            let fresh = cache.get(&path).is_none_or(|c| c.stamp != stamp);
            if fresh {
                let read = T::read(&path).map_err(|e| format!("{e:#}"));
                if let Err(reason) = &read {
                    warn!(file = %path.display(), %reason, "{} skipped", T::WHAT);
                }
                cache.insert(
                    path.clone(),
                    Cached {
                        stamp,
                        read,
                        hash: None,
                    },
                );
            }
            let c = &cache[&path];
            found.push(Found {
                name: rel,
                path,
                stamp,
                read: c.read.clone(),
                hash: c.hash.clone(),
            });
        }
        cache.retain(|p, _| seen.contains(p));
        drop(cache);
        name_files(&mut found);
        found.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.name.cmp(&b.name))
        });
        (found, pickles)
    }

    /// The usable files, sorted by name, each with its hash (computed now
    /// for new files: this reads them once).
    pub fn list(&self) -> Vec<Found<T>> {
        let (found, _) = self.scan();
        found
            .into_iter()
            .filter(|f| f.read.is_ok())
            .filter_map(|f| self.hashed(f).ok())
            .collect()
    }

    /// The file named `name`: the exact name, else the one name equal to it
    /// ignoring case.
    pub fn lookup(&self, name: &str) -> Lookup<T> {
        let (found, pickles) = self.scan();
        let exact = found.iter().position(|f| f.name == name);
        let folded = || {
            let mut it = found
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name.eq_ignore_ascii_case(name));
            match (it.next(), it.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        };
        match exact.or_else(folded) {
            Some(i) => {
                let f = found[i].clone();
                match &f.read {
                    Err(reason) => Lookup::Broken {
                        path: f.path,
                        reason: reason.clone(),
                    },
                    Ok(_) => match self.hashed(f) {
                        Ok(f) => Lookup::Found(f),
                        Err((path, reason)) => Lookup::Broken { path, reason },
                    },
                }
            }
            None => {
                let stem_is = |p: &PathBuf| {
                    p.file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| s.eq_ignore_ascii_case(name))
                };
                match pickles.into_iter().find(stem_is) {
                    Some(p) => Lookup::Pickle(p),
                    None => Lookup::Unknown {
                        available: found
                            .into_iter()
                            .filter(|f| f.read.is_ok())
                            .map(|f| f.name)
                            .collect(),
                    },
                }
            }
        }
    }

    /// `f` with its hash, computed (outside the lock) and cached when missing.
    fn hashed(&self, mut f: Found<T>) -> std::result::Result<Found<T>, (PathBuf, String)> {
        if f.hash.is_some() {
            return Ok(f);
        }
        let Ok(read) = &f.read else {
            return Err((f.path, "unreadable".into()));
        };
        match read.hash(&f.path) {
            Ok(h) => {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(c) = cache.get_mut(&f.path).filter(|c| c.stamp == f.stamp) {
                    c.hash = Some(h.clone());
                }
                f.hash = Some(h);
                Ok(f)
            }
            Err(e) => {
                warn!(file = %f.path.display(), error = %format!("{e:#}"), "{} could not be hashed", T::WHAT);
                Err((f.path, format!("{e:#}")))
            }
        }
    }
}

/// Names each file by its stem; files sharing a stem by their path under
/// the root instead (so no name is ambiguous).
fn name_files<T>(found: &mut [Found<T>]) {
    let stem = |f: &Found<T>| {
        f.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut count: HashMap<String, usize> = HashMap::new();
    for f in found.iter() {
        *count.entry(stem(f)).or_default() += 1;
    }
    for f in found.iter_mut() {
        let s = stem(f);
        if count[&s] == 1 {
            f.name = s;
        }
    }
}

/// Collects `(relative path without extension, path, stamp)` of the files
/// under `dir`, sorted, following links, skipping hidden entries.
fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, PathBuf, Stamp)>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        // Follows links.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, depth + 1, out);
        } else if meta.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let stamp = Stamp {
                size: meta.len(),
                modified: meta.modified().ok(),
            };
            out.push((rel, path, stamp));
        }
    }
}

/// The `--lora-dir` and `--embeddings-dir` catalogs, each optional.
#[derive(Clone, Default)]
pub struct Catalogs {
    pub loras: Option<std::sync::Arc<LoraCatalog>>,
    pub embeddings: Option<std::sync::Arc<EmbeddingCatalog>>,
}

impl Catalogs {
    /// Opens the folders given; each must exist.
    pub fn open(lora_dir: Option<&Path>, embeddings_dir: Option<&Path>) -> Result<Self> {
        use anyhow::Context;
        Ok(Self {
            loras: lora_dir
                .map(|d| LoraCatalog::open(d).context("--lora-dir"))
                .transpose()?
                .map(std::sync::Arc::new),
            embeddings: embeddings_dir
                .map(|d| EmbeddingCatalog::open(d).context("--embeddings-dir"))
                .transpose()?
                .map(std::sync::Arc::new),
        })
    }
}

impl std::fmt::Debug for Catalogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogs")
            .field(
                "loras",
                &self.loras.as_ref().map(|c| c.root().to_path_buf()),
            )
            .field(
                "embeddings",
                &self.embeddings.as_ref().map(|c| c.root().to_path_buf()),
            )
            .finish()
    }
}
