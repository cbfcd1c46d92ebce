//! Reading a LoRA file: its tensors grouped by the module they adapt, in the
//! formats kohya / A1111 (`lora_unet_*.lora_down.weight`), diffusers
//! (`unet.*.lora.down.weight`, `*.lora_linear_layer.down.weight`, the old
//! `*.processor.to_q_lora.down.weight`) and PEFT (`*.lora_A.weight`), LoCon's
//! `lora_mid`, and LyCORIS' `hada_*` / `lokr_*` tensors (kept for
//! [`super::lycoris_delta`]).

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The key layout a LoRA file uses (detected from its keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// kohya-ss / A1111: `lora_unet_<module>`, `lora_te[12]_<module>` with
    /// `.lora_down.weight`, `.lora_up.weight`, `.alpha`.
    Kohya,
    /// diffusers' own (pre-PEFT) format: `unet.<module>.lora.down.weight`.
    Diffusers,
    /// PEFT: `<module>.lora_A.weight` / `.lora_B.weight`.
    Peft,
}

impl LoraFormat {
    pub fn name(self) -> &'static str {
        match self {
            LoraFormat::Kohya => "kohya",
            LoraFormat::Diffusers => "diffusers",
            LoraFormat::Peft => "peft",
        }
    }
}

/// What a tensor is to its module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// `lora_down` / `lora.down` / `lora_A`: `[rank, in]` or `[rank, in, kh, kw]`.
    Down,
    /// `lora_up` / `lora.up` / `lora_B`: `[out, rank]` or `[out, rank, 1, 1]`.
    Up,
    /// LoCon's Tucker core `lora_mid`: `[rank, rank, kh, kw]`.
    Mid,
    /// The scalar `alpha` (the delta is scaled by `alpha / rank`).
    Alpha,
    /// Any other suffix (`hada_w1_a`, `lokr_w1`, `dora_scale`, ...), by name.
    Other(String),
}

/// The tensors of one adapted module, as named in the file (the module key
/// without the part suffix, e.g. `lora_unet_down_blocks_0_attentions_0_proj_in`).
#[derive(Debug, Clone)]
pub struct LoraModule {
    pub key: String,
    pub parts: BTreeMap<Part, Tensor>,
}

/// A LoRA file read into memory (on the CPU, in its stored dtype).
#[derive(Debug)]
pub struct LoraFile {
    /// The file stem, as requests name it.
    pub name: String,
    pub path: PathBuf,
    pub format: LoraFormat,
    pub modules: Vec<LoraModule>,
    /// Number of tensors in the file.
    pub tensor_count: usize,
    /// The safetensors `__metadata__` (kohya's `ss_*`, `modelspec.*`).
    pub metadata: HashMap<String, String>,
}

/// Suffixes (after the module key) and the part they name.
const SUFFIXES: &[(&str, Part)] = &[
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_mid.weight", Part::Mid),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".alpha", Part::Alpha),
];

/// Splits a tensor key into its module key and part.
pub fn split_key(key: &str) -> (String, Part) {
    // The attention-processor form: `attn1.processor.to_q_lora.down.weight`.
    let key = normalise_processor(key);
    for (suffix, part) in SUFFIXES {
        if let Some(module) = key.strip_suffix(suffix) {
            return (module.to_string(), part.clone());
        }
    }
    // LyCORIS and other parts: `<module>.hada_w1_a`, `<module>.dora_scale`.
    match key.rsplit_once('.') {
        Some((module, part)) => (module.to_string(), Part::Other(part.to_string())),
        None => (key.to_string(), Part::Other(String::new())),
    }
}

fn normalise_processor(key: &str) -> String {
    let Some((head, tail)) = key.split_once(".processor.") else {
        return key.to_string();
    };
    for (from, to) in [
        ("to_q_lora.", "to_q.lora."),
        ("to_k_lora.", "to_k.lora."),
        ("to_v_lora.", "to_v.lora."),
        ("to_out_lora.", "to_out.0.lora."),
    ] {
        if let Some(rest) = tail.strip_prefix(from) {
            return format!("{head}.{to}{rest}");
        }
    }
    key.to_string()
}

impl LoraFile {
    /// Reads a `.safetensors` LoRA. Pickles (`.pt`, `.ckpt`, `.bin`, `.pth`)
    /// are refused: loading one can run arbitrary code.
    ///
    /// Errors: another extension, an unreadable or corrupt file, no LoRA
    /// tensors in it.
    pub fn read(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => {}
            "pt" | "ckpt" | "bin" | "pth" | "pkl" => bail!(
                "{}: a pickle (.{ext}) can run code when loaded; only .safetensors LoRAs are read (convert it first)",
                path.display()
            ),
            _ => bail!("{}: not a .safetensors file", path.display()),
        }
        let bytes =
            std::fs::read(path).with_context(|| format!("reading LoRA {}", path.display()))?;
        let metadata = safetensors::SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{}: not a valid safetensors file", path.display()))?
            .1
            .metadata()
            .clone()
            .unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("lora")
            .to_string();
        let mut file = Self::from_tensors(&name, tensors)
            .with_context(|| format!("reading LoRA {}", path.display()))?;
        file.path = path.to_path_buf();
        file.metadata = metadata;
        // diffusers/PEFT files say their scale in the metadata, not per module.
        super::adapter_metadata::apply(&mut file)
            .with_context(|| format!("reading LoRA {}", path.display()))?;
        Ok(file)
    }

    /// Groups named tensors into modules and detects the format.
    ///
    /// Errors: no tensor with a LoRA / LyCORIS suffix.
    pub fn from_tensors(name: &str, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let tensor_count = tensors.len();
        let mut by_module: BTreeMap<String, BTreeMap<Part, Tensor>> = BTreeMap::new();
        let (mut kohya, mut peft, mut diffusers) = (false, false, false);
        for (key, t) in tensors {
            let (module, part) = split_key(&key);
            kohya |= module.starts_with("lora_");
            peft |= key.contains(".lora_A.") || key.contains(".lora_B.");
            diffusers |= key.contains(".lora.") || key.contains(".lora_linear_layer.");
            by_module.entry(module).or_default().insert(part, t);
        }
        let is_lora = |parts: &BTreeMap<Part, Tensor>| {
            parts.keys().any(|p| {
                matches!(p, Part::Down | Part::Up)
                    || matches!(p, Part::Other(s) if s.starts_with("hada_") || s.starts_with("lokr_"))
            })
        };
        if !by_module.values().any(is_lora) {
            bail!("no LoRA tensors (`lora_down`/`lora_up`, `lora.down`/`lora.up`, `lora_A`/`lora_B`, `hada_*`, `lokr_*`) in `{name}`");
        }
        let format = if kohya {
            LoraFormat::Kohya
        } else if peft {
            LoraFormat::Peft
        } else if diffusers {
            LoraFormat::Diffusers
        } else {
            LoraFormat::Kohya
        };
        Ok(Self {
            name: name.to_string(),
            path: PathBuf::new(),
            format,
            modules: by_module
                .into_iter()
                .map(|(key, parts)| LoraModule { key, parts })
                .collect(),
            tensor_count,
            metadata: HashMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_module_and_part() {
        let cases = [
            (
                "lora_unet_a_b.lora_down.weight",
                "lora_unet_a_b",
                Part::Down,
            ),
            ("lora_te1_x.alpha", "lora_te1_x", Part::Alpha),
            (
                "unet.m.attn1.to_q.lora.up.weight",
                "unet.m.attn1.to_q",
                Part::Up,
            ),
            (
                "unet.m.attn1.processor.to_out_lora.down.weight",
                "unet.m.attn1.to_out.0",
                Part::Down,
            ),
            (
                "text_encoder.t.q_proj.lora_linear_layer.up.weight",
                "text_encoder.t.q_proj",
                Part::Up,
            ),
            (
                "base_model.model.m.to_k.lora_A.weight",
                "base_model.model.m.to_k",
                Part::Down,
            ),
            ("lora_unet_c.lora_mid.weight", "lora_unet_c", Part::Mid),
            (
                "lora_unet_c.hada_w1_a",
                "lora_unet_c",
                Part::Other("hada_w1_a".into()),
            ),
        ];
        for (key, module, part) in cases {
            assert_eq!(split_key(key), (module.to_string(), part), "{key}");
        }
    }

    #[test]
    fn pickles_are_refused_with_the_reason() {
        let err = LoraFile::read(Path::new("/nonexistent/style.ckpt")).unwrap_err();
        assert!(format!("{err:#}").contains("can run code"), "{err:#}");
    }
}
