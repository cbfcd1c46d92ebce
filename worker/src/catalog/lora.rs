//! LoRA files: the layout of their tensors, the family they were trained
//! for (from the tensors' names and shapes, the metadata breaking ties) and
//! their training metadata, all from the safetensors header.
//!
//! Families, from the keys:
//! - SDXL: kohya's `lora_te1_`/`lora_te2_`, diffusers' `text_encoder_2.`, a
//!   UNet `transformer_blocks` index above 0 (SD 1.x and 2.x have one
//!   transformer block per attention), or a 2048-wide cross-attention
//!   (`attn2.to_k`/`to_v` input width);
//! - SD 3: MMDiT keys (`joint_blocks`, or `transformer.transformer_blocks`
//!   without Flux's `single_transformer_blocks` and 3072-wide attention);
//! - SD 1.x or 2.x: a UNet (`lora_unet_`, `unet.`, `down_blocks`) or CLIP
//!   (`lora_te_`, `text_encoder.`) layout; 2.x when a cross-attention or a
//!   text-encoder layer is 1024 wide, a `proj_in` is linear (SD 2's UNet
//!   projects linearly, SD 1's with 1x1 convolutions), or, with no width to
//!   tell, the metadata says so (`ss_v2`, `ss_base_model_version`,
//!   `modelspec.architecture`); 1.x otherwise.

use anyhow::{bail, Result};
use sd_worker_sdk::lora::{LoraMetadata, MAX_TRIGGER_WORDS};
use sd_worker_sdk::LoraInfo;
use std::path::Path;

use super::header::{read_header, Header, TensorHead};
use super::{hashes, CatalogKind, Folder};
use crate::model::Family;

/// The `--lora-dir` catalog.
pub type LoraCatalog = Folder<LoraFile>;

/// The layout of a LoRA's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// kohya-ss / A1111: `lora_unet_*`, `lora_te*_*`, `.lora_down`/`.lora_up`,
    /// `.alpha` (LyCORIS LoCon too).
    Kohya,
    /// diffusers' attention-processor layout: `*.lora.down`/`*.lora.up` or `*_lora.down`.
    Diffusers,
    /// PEFT: `*.lora_A`/`*.lora_B`.
    Peft,
    /// LyCORIS LoHa: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`.
    LycorisLoha,
    /// LyCORIS LoKr: `lokr_w1`, `lokr_w2` (or their factors).
    LycorisLokr,
}

impl LoraFormat {
    pub fn name(self) -> &'static str {
        match self {
            LoraFormat::Kohya => "kohya",
            LoraFormat::Diffusers => "diffusers",
            LoraFormat::Peft => "peft",
            LoraFormat::LycorisLoha => "lycoris-loha",
            LoraFormat::LycorisLokr => "lycoris-lokr",
        }
    }
}

/// What the catalog knows of a LoRA file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFile {
    /// None when the keys do not tell (listed as `unknown`).
    pub family: Option<Family>,
    pub format: LoraFormat,
    /// Tensors in the file.
    pub tensors: usize,
    /// Where the tensor data starts (8 + the header length).
    pub data_start: u64,
    /// kohya's precomputed hash, when its metadata has one.
    pub sshs_model_hash: Option<String>,
    pub trigger_words: Vec<String>,
    pub metadata: LoraMetadata,
}

impl CatalogKind for LoraFile {
    type Info = LoraInfo;

    fn listed(&self, name: &str, size_bytes: u64, hash: &str) -> LoraInfo {
        self.info(name, size_bytes, hash)
    }

    const WHAT: &'static str = "LoRA";

    fn read(path: &Path) -> Result<Self> {
        let header = read_header(path)?;
        Self::from_header(&header)
    }

    fn hash(&self, path: &Path) -> Result<String> {
        hashes::lora_short_hash(path, self.data_start, self.sshs_model_hash.as_deref())
    }
}

impl LoraFile {
    /// Reads a checked header. Errors when no tensor has a LoRA's name.
    pub fn from_header(header: &Header) -> Result<Self> {
        let Some(format) = detect_format(header) else {
            bail!(
                "no LoRA tensors in it (kohya `lora_down`/`lora_up`, diffusers `lora.down`/`lora.up`, PEFT `lora_A`/`lora_B`, LyCORIS `hada_*`/`lokr_*`); is it a model rather than a LoRA?"
            );
        };
        let meta = &header.metadata;
        let get = |k: &str| meta.get(k).filter(|v| !v.trim().is_empty()).cloned();
        let metadata = LoraMetadata {
            title: get("modelspec.title").or_else(|| get("ss_output_name")),
            architecture: get("modelspec.architecture"),
            base_model: get("ss_sd_model_name").or_else(|| get("ss_base_model_version")),
            resolution: get("modelspec.resolution").or_else(|| get("ss_resolution")),
            network_module: get("ss_network_module"),
            network_dim: get("ss_network_dim"),
            network_alpha: get("ss_network_alpha"),
            author: get("modelspec.author"),
            description: get("modelspec.description").map(|d| d.chars().take(500).collect()),
        };
        Ok(Self {
            family: detect_family(header),
            format,
            tensors: header.tensors.len(),
            data_start: header.data_start,
            sshs_model_hash: get("sshs_model_hash"),
            trigger_words: trigger_words(meta),
            metadata,
        })
    }

    /// The family's name, or `unknown`.
    pub fn family_name(&self) -> &'static str {
        self.family.map_or("unknown", Family::name)
    }

    /// As `GET /v1/loras` lists it.
    pub fn info(&self, name: &str, size_bytes: u64, hash: &str) -> LoraInfo {
        LoraInfo {
            name: name.to_string(),
            size_bytes,
            family: self.family_name().to_string(),
            format: self.format.name().to_string(),
            hash: hash.to_string(),
            trigger_words: self.trigger_words.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

fn detect_format(header: &Header) -> Option<LoraFormat> {
    let keys = || header.tensors.keys();
    let any = |pat: &str| keys().any(|k| k.contains(pat));
    if any(".hada_w1_a") || any(".hada_w1_b") {
        Some(LoraFormat::LycorisLoha)
    } else if any(".lokr_w1") || any(".lokr_w2") {
        Some(LoraFormat::LycorisLokr)
    } else if any(".lora_A.") || any(".lora_B.") {
        Some(LoraFormat::Peft)
    } else if any(".lora_down.") || any(".lora_up.") {
        Some(LoraFormat::Kohya)
    } else if any(".lora.down.") || any(".lora.up.") || any("_lora.down.") {
        Some(LoraFormat::Diffusers)
    } else {
        None
    }
}

/// Tensors whose second dimension is the input width of the layer they adapt.
fn is_down(key: &str) -> bool {
    [
        ".lora_down.weight",
        ".lora.down.weight",
        "_lora.down.weight",
        ".lora_A.weight",
        ".hada_w1_b",
        ".hada_w2_b",
    ]
    .iter()
    .any(|s| key.ends_with(s))
}

/// The index after the last `transformer_blocks` in `key`, when it is a number.
fn transformer_block_index(key: &str) -> Option<usize> {
    let at = key.rfind("transformer_blocks")? + "transformer_blocks".len();
    let digits: String = key[at..]
        .chars()
        .skip(1)
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The input width of the layer `t` adapts, for a down tensor.
fn in_width(key: &str, t: &TensorHead) -> Option<usize> {
    (is_down(key) && t.shape.len() >= 2).then(|| t.shape[1])
}

fn detect_family(header: &Header) -> Option<Family> {
    let (mut sdxl, mut mmdit, mut flux, mut sd12) = (false, false, false, false);
    let (mut context, mut te_width, mut linear_proj) = (None, None, None);
    for (key, t) in &header.tensors {
        let k = key.as_str();
        let text = k.starts_with("lora_te") || k.starts_with("text_encoder");
        if k.starts_with("lora_te1_")
            || k.starts_with("lora_te2_")
            || k.starts_with("text_encoder_2.")
        {
            sdxl = true;
        }
        if k.contains("single_transformer_blocks")
            || k.contains("double_blocks")
            || k.contains("single_blocks")
        {
            flux = true;
        }
        if k.contains("joint_blocks") || (k.starts_with("transformer.") && !text) {
            mmdit = true;
        }
        let unet = k.starts_with("lora_unet_")
            || k.starts_with("unet.")
            || k.starts_with("down_blocks")
            || k.starts_with("mid_block")
            || k.starts_with("up_blocks");
        if unet || k.starts_with("lora_te_") || k.starts_with("text_encoder.") {
            sd12 = true;
        }
        if unet && transformer_block_index(k).is_some_and(|i| i > 0) {
            sdxl = true;
        }
        let width = in_width(k, t);
        if unet && k.contains("attn2") && (k.contains("to_k") || k.contains("to_v")) {
            context = context.or(width);
        }
        if text && (k.contains("q_proj") || k.contains("k_proj")) {
            te_width = te_width.or(width);
        }
        if unet && k.contains("proj_in") && is_down(k) {
            linear_proj = linear_proj.or(Some(t.shape.len() == 2));
        }
        if mmdit && k.contains("to_q") && width == Some(3072) {
            flux = true;
        }
    }
    if flux {
        return None;
    }
    if mmdit {
        return Some(Family::StableDiffusion3);
    }
    if sdxl || context == Some(2048) {
        return Some(Family::StableDiffusionXl);
    }
    if !sd12 {
        return None;
    }
    let widths = [context, te_width];
    if widths.contains(&Some(1024)) || linear_proj == Some(true) {
        return Some(Family::StableDiffusion2);
    }
    if widths.contains(&Some(768)) || linear_proj == Some(false) {
        return Some(Family::StableDiffusion1);
    }
    let meta = &header.metadata;
    let says = |k: &str, p: &str| meta.get(k).is_some_and(|v| v.starts_with(p));
    if says("ss_v2", "True")
        || says("ss_base_model_version", "sd_v2")
        || says("modelspec.architecture", "stable-diffusion-v2")
    {
        Some(Family::StableDiffusion2)
    } else {
        Some(Family::StableDiffusion1)
    }
}

/// `modelspec.trigger_phrase`, then the caption tags of `ss_tag_frequency`
/// (`{"dataset": {"tag": count}}`) summed over its datasets, the most
/// frequent first (ties by name), at most [`MAX_TRIGGER_WORDS`].
fn trigger_words(meta: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut words: Vec<String> = meta
        .get("modelspec.trigger_phrase")
        .map(|p| {
            p.split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, f64> = Default::default();
    if let Some(Ok(serde_json::Value::Object(sets))) = meta
        .get("ss_tag_frequency")
        .map(|s| serde_json::from_str::<serde_json::Value>(s))
    {
        for set in sets.values() {
            for (tag, n) in set.as_object().into_iter().flatten() {
                let tag = tag.trim();
                if !tag.is_empty() {
                    *counts.entry(tag.to_string()).or_default() += n.as_f64().unwrap_or(0.0);
                }
            }
        }
    }
    let mut ranked: Vec<(String, f64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (tag, _) in ranked {
        if !words.contains(&tag) {
            words.push(tag);
        }
    }
    words.truncate(MAX_TRIGGER_WORDS);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(keys: &[(&str, &[usize])], meta: &[(&str, &str)]) -> Header {
        Header {
            tensors: keys
                .iter()
                .map(|(k, s)| {
                    (
                        k.to_string(),
                        TensorHead {
                            dtype: "F32".into(),
                            shape: s.to_vec(),
                        },
                    )
                })
                .collect(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data_start: 8,
        }
    }

    fn family(keys: &[(&str, &[usize])], meta: &[(&str, &str)]) -> &'static str {
        LoraFile::from_header(&header(keys, meta))
            .unwrap()
            .family_name()
    }

    #[test]
    fn families_from_keys_and_widths() {
        let sd1 =
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight";
        assert_eq!(family(&[(sd1, &[4, 768])], &[]), "stable-diffusion-1");
        assert_eq!(family(&[(sd1, &[4, 1024])], &[]), "stable-diffusion-2");
        assert_eq!(family(&[(sd1, &[4, 2048])], &[]), "stable-diffusion-xl");
        // Toy widths: SD 1 unless the metadata says 2.
        assert_eq!(family(&[(sd1, &[4, 32])], &[]), "stable-diffusion-1");
        assert_eq!(
            family(&[(sd1, &[4, 32])], &[("ss_v2", "True")]),
            "stable-diffusion-2"
        );
        let te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight";
        assert_eq!(family(&[(te, &[4, 1024])], &[]), "stable-diffusion-2");
        let proj = "lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight";
        assert_eq!(family(&[(proj, &[4, 32])], &[]), "stable-diffusion-2");
        assert_eq!(family(&[(proj, &[4, 32, 1, 1])], &[]), "stable-diffusion-1");
        let xl = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight";
        assert_eq!(family(&[(xl, &[4, 32])], &[]), "stable-diffusion-xl");
        let xl2 = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight";
        assert_eq!(family(&[(xl2, &[4, 32])], &[]), "stable-diffusion-xl");
        let peft = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight";
        let f = LoraFile::from_header(&header(&[(peft, &[4, 768])], &[])).unwrap();
        assert_eq!(
            (f.family_name(), f.format),
            ("stable-diffusion-1", LoraFormat::Peft)
        );
        let sd3 = "transformer.transformer_blocks.0.attn.add_q_proj.lora_A.weight";
        assert_eq!(family(&[(sd3, &[4, 1536])], &[]), "stable-diffusion-3");
        let flux = "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight";
        assert_eq!(family(&[(flux, &[4, 3072])], &[]), "unknown");
        let loha = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_b";
        let f = LoraFile::from_header(&header(&[(loha, &[4, 768])], &[])).unwrap();
        assert_eq!(
            (f.family_name(), f.format),
            ("stable-diffusion-1", LoraFormat::LycorisLoha)
        );
        let e = LoraFile::from_header(&header(&[("model.diffusion_model.x.weight", &[4])], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no LoRA tensors"), "{e}");
    }

    #[test]
    fn trigger_words_most_frequent_first_and_metadata() {
        let freq = r#"{"10_char":{"red hat":5,"smile":2,"1girl":9},"5_bg":{"smile":8," ":3}}"#;
        let h = header(
            &[("lora_te_x.lora_down.weight", &[1, 1])],
            &[
                ("ss_tag_frequency", freq),
                ("modelspec.trigger_phrase", "zzchar"),
                ("ss_output_name", "my-lora"),
                ("ss_resolution", "(512, 512)"),
                ("sshs_model_hash", "0123456789abcdef"),
            ],
        );
        let f = LoraFile::from_header(&h).unwrap();
        assert_eq!(f.trigger_words, ["zzchar", "smile", "1girl", "red hat"]);
        assert_eq!(f.metadata.title.as_deref(), Some("my-lora"));
        assert_eq!(f.metadata.resolution.as_deref(), Some("(512, 512)"));
        assert_eq!(f.sshs_model_hash.as_deref(), Some("0123456789abcdef"));
    }
}
