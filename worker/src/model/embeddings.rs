//! Textual-inversion embeddings: named sets of token vectors a prompt uses
//! by writing the name, as in A1111 (`modules/textual_inversion`) and
//! diffusers' `load_textual_inversion`.
//!
//! Files are `.safetensors` only (a pickle, `.pt`/`.bin`, can run code when
//! read). Three layouts are read, as A1111's `create_embedding_from_data`:
//! one tensor alone (A1111's safetensors conversions `emb_params` or
//! `string_to_param.*`, diffusers' `<token>`), [n, dim] or [dim]; or SDXL's
//! `clip_l` [n, 768] and `clip_g` [n, 1280] pair, one set per encoder.
//!
//! In a prompt, the name is matched as A1111 does, as its token sequence in
//! the prompt's tokens (so case and spacing follow CLIP's normalisation,
//! longest name first), with one addition: the match must start a word (the
//! previous token ends one), so a name inside another word is left alone.
//! The matched tokens become the embedding's n placeholder ids past the text
//! encoder's vocabulary, which [`ClipTextEncoder::encode_with`] looks up in
//! the vectors; the base vocabulary and weights are never changed. The n
//! vectors count as n tokens of the 75-token window and, as in A1111, are
//! never split across two windows.
//!
//! [`ClipTextEncoder::encode_with`]: crate::model::text_encoder::ClipTextEncoder::encode_with

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::conditioner::EncoderRole;
use super::tokenizer::ClipTokenizer;

/// The vectors of one embedding file.
#[derive(Debug, Clone)]
enum Vectors {
    /// One set [n, dim] for the family's single encoder (SD 1.x, 2.x).
    Single(Tensor),
    /// SDXL's pair, [n, CLIP-L width] and [n, OpenCLIP-G width].
    Pair { clip_l: Tensor, clip_g: Tensor },
}

/// One textual-inversion embedding: its name (what a prompt writes) and its
/// vectors (f32, on the CPU).
#[derive(Debug, Clone)]
pub struct TextualInversion {
    name: String,
    vectors: Vectors,
}

/// What [`TextualInversion::vectors_for`] is asked for: which encoder of
/// which kind of model.
#[derive(Debug, Clone, Copy)]
pub struct EncoderSlot {
    pub role: EncoderRole,
    /// The encoder's hidden size (the vectors' width).
    pub hidden: usize,
    /// True when the model has CLIP-L and OpenCLIP-G side by side (SDXL).
    pub paired: bool,
}

impl EncoderSlot {
    /// The family such an encoder belongs to, for error messages.
    fn family(self) -> String {
        match (self.paired, self.role) {
            (true, _) => "SDXL".into(),
            (false, EncoderRole::ClipL) => format!("SD 1.x ({}-wide CLIP-L)", self.hidden),
            (false, EncoderRole::OpenClipH) => format!("SD 2.x ({}-wide OpenCLIP-H)", self.hidden),
            (false, role) => format!("{} ({}-wide)", role.name(), self.hidden),
        }
    }
}

/// The family a width suggests (768: SD 1.x, 1024: SD 2.x).
fn width_family(width: usize) -> String {
    match width {
        768 => "768-wide vectors: SD 1.x".into(),
        1024 => "1024-wide vectors: SD 2.x".into(),
        w => format!("{w}-wide vectors"),
    }
}

/// [n, dim] f32 from a 1-D or 2-D tensor.
fn as_vectors(t: &Tensor, key: &str) -> Result<Tensor> {
    let t = t.to_dtype(DType::F32)?;
    let t = match t.rank() {
        1 => t.unsqueeze(0)?,
        2 => t,
        r => {
            bail!("tensor `{key}` has {r} dimensions; an embedding is [vectors, width] or [width]")
        }
    };
    let (n, dim) = t.dims2()?;
    if n == 0 || dim == 0 {
        bail!("tensor `{key}` is empty ({n} x {dim})");
    }
    Ok(t)
}

impl TextualInversion {
    /// Reads `path` (`.safetensors`); the name is the file stem, as A1111.
    ///
    /// Errors: a pickle (`.pt`, `.bin`, `.ckpt`, `.pth`) or any other
    /// extension; an unreadable file; tensors in none of the layouts.
    pub fn load(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => {}
            "pt" | "bin" | "ckpt" | "pth" => bail!(
                "{}: .{ext} embeddings are refused: they are Python pickles, and reading a \
                 pickle can run arbitrary code; convert it to .safetensors",
                path.display()
            ),
            _ => bail!(
                "{}: not an embedding file (expected .safetensors)",
                path.display()
            ),
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| anyhow!("{}: the file name is not UTF-8", path.display()))?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading the embedding {}", path.display()))?;
        Self::from_tensors(name, tensors).with_context(|| format!("embedding {}", path.display()))
    }

    /// An embedding named `name` from a file's tensors (see the module docs
    /// for the layouts).
    ///
    /// Errors: an empty name; no tensor, or several that are not a
    /// `clip_l`/`clip_g` pair; a tensor that is not [n, dim] or [dim];
    /// `clip_l` and `clip_g` with different vector counts.
    pub fn from_tensors(name: &str, tensors: HashMap<String, Tensor>) -> Result<Self> {
        if name.trim().is_empty() {
            bail!("an embedding needs a name");
        }
        let vectors =
            if let (Some(l), Some(g)) = (tensors.get("clip_l"), tensors.get("clip_g")) {
                let (clip_l, clip_g) = (as_vectors(l, "clip_l")?, as_vectors(g, "clip_g")?);
                let (nl, ng) = (clip_l.dim(0)?, clip_g.dim(0)?);
                if nl != ng {
                    bail!("clip_l has {nl} vectors and clip_g {ng}; they must have as many");
                }
                Vectors::Pair { clip_l, clip_g }
            } else {
                let key =
                    match tensors.len() {
                        0 => bail!("the file holds no tensor"),
                        1 => tensors.keys().next().expect("one key"),
                        _ => {
                            let mut a1111 = tensors.keys().filter(|k| {
                                *k == "emb_params" || k.starts_with("string_to_param.")
                            });
                            match (a1111.next(), a1111.next()) {
                                (Some(k), None) => k,
                                _ => {
                                    let mut keys: Vec<&String> = tensors.keys().collect();
                                    keys.sort();
                                    bail!(
                                "the file holds several tensors ({}); an embedding has one, \
                                 or SDXL's clip_l and clip_g",
                                keys.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                            )
                                }
                            }
                        }
                    };
                Vectors::Single(as_vectors(&tensors[key], key)?)
            };
        Ok(Self {
            name: name.to_string(),
            vectors,
        })
    }

    /// What a prompt writes to use it (the file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// n: the tokens it takes in a window.
    pub fn vector_count(&self) -> usize {
        match &self.vectors {
            Vectors::Single(v) | Vectors::Pair { clip_l: v, .. } => v.dims()[0],
        }
    }

    /// The widths of its vector sets: [dim] or SDXL's [clip_l, clip_g].
    pub fn widths(&self) -> Vec<usize> {
        match &self.vectors {
            Vectors::Single(v) => vec![v.dims()[1]],
            Vectors::Pair { clip_l, clip_g } => vec![clip_l.dims()[1], clip_g.dims()[1]],
        }
    }

    /// The vectors [n, hidden] (f32, CPU) the encoder in `slot` uses: the
    /// single set for SD 1.x/2.x, `clip_l` for SDXL's CLIP-L and `clip_g`
    /// for its OpenCLIP-G.
    ///
    /// Errors (naming both families): an SDXL pair on a one-encoder model,
    /// a single set on SDXL, a width other than the encoder's.
    pub fn vectors_for(&self, slot: EncoderSlot) -> Result<Tensor> {
        let name = &self.name;
        let family = slot.family();
        let v = match (&self.vectors, slot.paired) {
            (Vectors::Single(v), false) => v,
            (Vectors::Pair { clip_l, clip_g }, true) => match slot.role {
                EncoderRole::ClipL => clip_l,
                EncoderRole::OpenClipG => clip_g,
                role => bail!(
                    "embedding `{name}`: SDXL embeddings have no vectors for {}",
                    role.name()
                ),
            },
            (Vectors::Pair { clip_l, clip_g }, false) => bail!(
                "embedding `{name}` is an SDXL embedding (clip_l {}-wide, clip_g {}-wide); \
                 this model is {family}",
                clip_l.dims()[1],
                clip_g.dims()[1]
            ),
            (Vectors::Single(v), true) => bail!(
                "embedding `{name}` has one set of {} (an SD 1.x/2.x embedding); this model \
                 is SDXL and needs an SDXL embedding (clip_l and clip_g)",
                width_family(v.dims()[1])
            ),
        };
        let width = v.dims()[1];
        if width != slot.hidden {
            bail!(
                "embedding `{name}` has {}; this model is {family}: its {} is {}-wide",
                width_family(width),
                slot.role.name(),
                slot.hidden
            );
        }
        Ok(v.clone())
    }
}

/// The embeddings a job may use, by name (CLIP reads prompts lowercased, so
/// names that differ in case only are one; the last inserted wins).
/// Cheap to clone: the vectors are shared.
#[derive(Debug, Clone, Default)]
pub struct TextualInversions {
    items: Vec<Arc<TextualInversion>>,
}

impl TextualInversions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `ti`, replacing one of the same (case-insensitive) name.
    pub fn insert(&mut self, ti: impl Into<Arc<TextualInversion>>) {
        let ti = ti.into();
        let lower = ti.name.to_lowercase();
        self.items.retain(|t| t.name.to_lowercase() != lower);
        self.items.push(ti);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TextualInversion> {
        self.items.iter().map(|t| t.as_ref())
    }
}

/// Of `names`, those written in any of `texts` as a whole word (ignoring
/// case; not preceded or followed by a letter or digit): the embeddings a
/// job should load. A cheap text-level filter; the tokenizer decides the
/// exact matches.
pub fn names_in<'a>(names: impl IntoIterator<Item = &'a str>, texts: &[&str]) -> Vec<&'a str> {
    let texts: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
    names
        .into_iter()
        .filter(|name| {
            let needle = name.to_lowercase();
            !needle.trim().is_empty() && texts.iter().any(|t| contains_word(t, &needle))
        })
        .collect()
}

fn contains_word(text: &str, word: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        // Only a letter next to a letter (or digit next to digit) joins CLIP words.
        !(alnum(before) && alnum(word.chars().next())
            || alnum(after) && alnum(word.chars().next_back()))
    })
}

/// A prompt tokenized for one CLIP encoder with embeddings in place.
#[derive(Debug)]
pub(crate) struct EmbeddedTokens {
    /// Windows of `max_length` ids (bos, tokens, eos, pad).
    pub windows: Vec<Vec<u32>>,
    /// Tokens (an embedding counting n) before any cut.
    pub token_count: usize,
    pub truncated: bool,
    /// The vectors the placeholder ids stand for, [rows, hidden] f32 on the
    /// CPU, row k for id `placeholder_base + k`; None when no name matched.
    pub extra: Option<Tensor>,
    /// Names of the embeddings matched, in order of first use.
    pub used: Vec<String>,
}

/// Tokenizes `text` with `tok`, replacing each whole-word occurrence of an
/// embedding name of `set` by its vectors' placeholder ids (starting at
/// `placeholder_base`, the encoder's vocabulary size), in at most
/// `max_windows` windows. `slot` says which vectors and checks their width.
///
/// Errors: a matched embedding that does not fit the encoder; one with more
/// vectors than a window holds.
pub(crate) fn tokenize(
    tok: &ClipTokenizer,
    text: &str,
    max_windows: usize,
    set: &TextualInversions,
    slot: EncoderSlot,
    placeholder_base: u32,
) -> Result<EmbeddedTokens> {
    let base = tok.tokens(text)?;
    // Each name as tokens, longest first (A1111's `ids_lookup` order).
    let mut names: Vec<(Vec<u32>, &TextualInversion)> = Vec::with_capacity(set.len());
    for ti in set.iter() {
        let ids = tok.tokens(&ti.name)?;
        if !ids.is_empty() && !ids.iter().any(|&id| tok.is_special(id)) {
            names.push((ids, ti));
        }
    }
    names.sort_by_key(|(ids, _)| std::cmp::Reverse(ids.len()));

    let room = tok.max_length().saturating_sub(2).max(1);
    let mut used: Vec<(&TextualInversion, u32)> = Vec::new();
    let mut rows: Vec<Tensor> = Vec::new();
    let mut next_row = 0u32;
    let mut pieces: Vec<Vec<u32>> = Vec::with_capacity(base.len());
    let mut i = 0;
    while i < base.len() {
        let word_start = i == 0 || tok.ends_word(base[i - 1]);
        let hit = word_start
            .then(|| names.iter().find(|(ids, _)| base[i..].starts_with(ids)))
            .flatten();
        let Some((ids, ti)) = hit else {
            pieces.push(vec![base[i]]);
            i += 1;
            continue;
        };
        i += ids.len();
        let n = ti.vector_count();
        if n > room {
            bail!(
                "embedding `{}` has {n} vectors, more than a window's {room} tokens",
                ti.name
            );
        }
        let start = match used.iter().find(|(u, _)| std::ptr::eq(*u, *ti)) {
            Some(&(_, start)) => start,
            None => {
                rows.push(ti.vectors_for(slot)?);
                let start = placeholder_base + next_row;
                next_row += n as u32;
                used.push((ti, start));
                start
            }
        };
        pieces.push((start..start + n as u32).collect());
    }

    let mut chunks: Vec<Vec<u32>> = Vec::new();
    let mut chunk: Vec<u32> = Vec::with_capacity(room);
    let mut token_count = 0;
    for piece in pieces {
        token_count += piece.len();
        if chunk.len() + piece.len() > room {
            chunks.push(std::mem::take(&mut chunk));
        }
        chunk.extend(piece);
    }
    if !chunk.is_empty() || chunks.is_empty() {
        chunks.push(chunk);
    }
    let max_windows = max_windows.max(1);
    let truncated = chunks.len() > max_windows;
    chunks.truncate(max_windows);
    Ok(EmbeddedTokens {
        windows: chunks.iter().map(|c| tok.window(c)).collect(),
        token_count,
        truncated,
        extra: (!rows.is_empty())
            .then(|| Tensor::cat(&rows, 0))
            .transpose()?,
        used: used.iter().map(|(ti, _)| ti.name.clone()).collect(),
    })
}

/// On-disk layouts [`write_embedding`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// A1111's safetensors conversion: `emb_params` [n, dim].
    A1111,
    /// diffusers' `<token>` [n, dim] (the key is `<file stem>`).
    Diffusers,
    /// SDXL: `clip_l` [n, dims[0]] and `clip_g` [n, dims[1]].
    Sdxl,
}

impl EmbeddingFormat {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "a1111" => Self::A1111,
            "diffusers" => Self::Diffusers,
            "sdxl" => Self::Sdxl,
            other => bail!("unknown embedding format `{other}`: one of a1111, diffusers, sdxl"),
        })
    }
}

/// Writes a deterministic embedding to `path` (`.safetensors`): `n` vectors
/// per set, N(0, 1/dim) values from `seed` (ChaCha8), of width `dims[0]`
/// (`dims[0]` and `dims[1]` for [`EmbeddingFormat::Sdxl`]). Same arguments,
/// byte-identical file.
///
/// Errors: `n` or a width of 0, the wrong number of widths, an unwritable path.
pub fn write_embedding(
    path: &Path,
    format: EmbeddingFormat,
    dims: &[usize],
    n: usize,
    seed: u64,
) -> Result<()> {
    let want = if format == EmbeddingFormat::Sdxl {
        2
    } else {
        1
    };
    if dims.len() != want || dims.contains(&0) || n == 0 {
        bail!("{format:?} embeddings need {want} non-zero width(s) and at least one vector");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut set = |dim: usize| -> Result<Tensor> {
        let std = (1.0 / dim as f64).sqrt();
        let values: Vec<f32> = (0..n * dim)
            .map(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                (v * std) as f32
            })
            .collect();
        Ok(Tensor::from_vec(values, (n, dim), &Device::Cpu)?)
    };
    let mut tensors = HashMap::new();
    match format {
        EmbeddingFormat::A1111 => {
            tensors.insert("emb_params".to_string(), set(dims[0])?);
        }
        EmbeddingFormat::Diffusers => {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("embedding");
            tensors.insert(format!("<{stem}>"), set(dims[0])?);
        }
        EmbeddingFormat::Sdxl => {
            tensors.insert("clip_l".to_string(), set(dims[0])?);
            tensors.insert("clip_g".to_string(), set(dims[1])?);
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    super::generate::save(tensors, path)
}

#[cfg(test)]
#[path = "embeddings_tests.rs"]
mod tests;
