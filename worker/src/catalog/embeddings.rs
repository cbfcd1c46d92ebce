//! Textual-inversion embedding files, read as A1111's
//! `create_embedding_from_data` reads a safetensors file: either one tensor
//! (any name: `emb_params`, `*`, a token) of `[vectors, width]` or
//! `[width]`, or SDXL's `clip_l` (`[vectors, 768]`) and `clip_g`
//! (`[vectors, 1280]`) pair. The family follows from the width: 768 SD 1.x
//! (CLIP ViT-L), 1024 SD 2.x (OpenCLIP ViT-H), the pair SDXL; any other
//! width is listed as `unknown`.

use anyhow::{bail, Result};
use sd_worker_sdk::EmbeddingInfo;
use std::path::Path;

use super::header::read_header;
use super::{hashes, CatalogKind, Folder};
use crate::model::Family;

/// The `--embeddings-dir` catalog.
pub type EmbeddingCatalog = Folder<EmbeddingFile>;

/// What the catalog knows of an embedding file.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingFile {
    pub family: Option<Family>,
    /// Token vectors it stands for.
    pub vectors: usize,
    /// Width of each vector: one tensor's, or `[clip_l, clip_g]`'s.
    pub widths: Vec<usize>,
}

impl CatalogKind for EmbeddingFile {
    type Info = EmbeddingInfo;

    fn listed(&self, name: &str, size_bytes: u64, hash: &str) -> EmbeddingInfo {
        self.info(name, size_bytes, hash)
    }

    const WHAT: &'static str = "embedding";

    fn read(path: &Path) -> Result<Self> {
        let header = read_header(path)?;
        let float = |d: &str| matches!(d, "F32" | "F16" | "BF16" | "F64");
        let t = &header.tensors;
        if let (Some(l), Some(g)) = (t.get("clip_l"), t.get("clip_g")) {
            if t.len() != 2 || l.shape.len() != 2 || g.shape.len() != 2 {
                bail!("an SDXL embedding holds `clip_l` and `clip_g` alone, each [vectors, width]");
            }
            if l.shape[0] != g.shape[0] {
                bail!(
                    "`clip_l` has {} vectors and `clip_g` {}: they must match",
                    l.shape[0],
                    g.shape[0]
                );
            }
            if !float(&l.dtype) || !float(&g.dtype) {
                bail!("`clip_l` and `clip_g` must be floating point");
            }
            return Ok(Self {
                family: Some(Family::StableDiffusionXl),
                vectors: l.shape[0],
                widths: vec![l.shape[1], g.shape[1]],
            });
        }
        let mut tensors = t.iter();
        let (Some((name, only)), None) = (tensors.next(), tensors.next()) else {
            bail!(
                "not a textual-inversion embedding: it holds {} tensors, not one ([vectors, width]) nor a `clip_l` and `clip_g` pair",
                t.len()
            );
        };
        let (vectors, width) = match only.shape[..] {
            [w] => (1, w),
            [n, w] => (n, w),
            _ => bail!(
                "tensor `{name}` is {:?}; an embedding is [vectors, width]",
                only.shape
            ),
        };
        if vectors == 0 || width == 0 || !float(&only.dtype) {
            bail!(
                "tensor `{name}` ({} {:?}) is not a floating-point [vectors, width] with vectors",
                only.dtype,
                only.shape
            );
        }
        let family = match width {
            768 => Some(Family::StableDiffusion1),
            1024 => Some(Family::StableDiffusion2),
            _ => None,
        };
        Ok(Self {
            family,
            vectors,
            widths: vec![width],
        })
    }

    fn hash(&self, path: &Path) -> Result<String> {
        hashes::embedding_short_hash(path)
    }
}

impl EmbeddingFile {
    /// The family's name, or `unknown`.
    pub fn family_name(&self) -> &'static str {
        self.family.map_or("unknown", Family::name)
    }

    /// As `GET /v1/embeddings` lists it.
    pub fn info(&self, name: &str, size_bytes: u64, hash: &str) -> EmbeddingInfo {
        EmbeddingInfo {
            name: name.to_string(),
            size_bytes,
            family: self.family_name().to_string(),
            vectors: self.vectors as u32,
            hash: hash.to_string(),
        }
    }
}
