//! PEFT's scale from a diffusers/PEFT file's `lora_adapter_metadata`
//! (`__metadata__` JSON that diffusers' `save_lora_weights` writes since
//! 0.34: per component `unet.r`, `unet.lora_alpha`, `unet.rank_pattern`,
//! `unet.alpha_pattern`, `unet.use_rslora`, and the same under
//! `text_encoder`, `text_encoder_2`, `transformer`). Such files carry no
//! per-module `alpha` tensor; without this their modules would be merged at
//! scale 1 (alpha = rank) whatever `lora_alpha` they were trained with.
//! PEFT's `LoraLayer.update_layer`: scale = `lora_alpha / r`, or
//! `lora_alpha / sqrt(r)` with rsLoRA.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use super::format::{LoraFile, Part};

/// The components diffusers prefixes, longest first.
const COMPONENTS: [&str; 4] = ["text_encoder_2", "text_encoder", "unet", "transformer"];

/// Gives each module of `file` without an `alpha` the alpha that makes
/// merge's `alpha / rank` equal PEFT's scale for it. A file without the
/// metadata is left as it is.
///
/// Errors: metadata that is not a JSON object.
pub fn apply(file: &mut LoraFile) -> Result<()> {
    let Some(json) = file.metadata.get("lora_adapter_metadata") else {
        return Ok(());
    };
    let meta: Map<String, Value> = serde_json::from_str(json).with_context(|| {
        format!(
            "`{}`: lora_adapter_metadata is not a JSON object",
            file.name
        )
    })?;
    for module in &mut file.modules {
        if module.parts.contains_key(&Part::Alpha) {
            continue;
        }
        let Some((component, name)) = COMPONENTS
            .iter()
            .find_map(|c| module.key.strip_prefix(&format!("{c}.")).map(|n| (*c, n)))
        else {
            continue;
        };
        let number = |k: &str| {
            meta.get(&format!("{component}.{k}"))
                .and_then(Value::as_f64)
        };
        let Some(mut r) = number("r") else { continue };
        let mut alpha = number("lora_alpha").unwrap_or(r);
        if let Some(p) = pattern(&meta, component, "rank_pattern", name) {
            r = p;
        }
        if let Some(p) = pattern(&meta, component, "alpha_pattern", name) {
            alpha = p;
        }
        let rslora = meta
            .get(&format!("{component}.use_rslora"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let scale = if rslora { alpha / r.sqrt() } else { alpha / r };
        let Some(rank) = module
            .parts
            .get(&Part::Down)
            .map(|d| d.dim(0))
            .transpose()?
        else {
            continue;
        };
        let alpha = Tensor::new(&[(scale * rank as f64) as f32], &Device::Cpu)?;
        module.parts.insert(Part::Alpha, alpha);
    }
    Ok(())
}

/// A `rank_pattern` / `alpha_pattern` value for module `name`: PEFT matches
/// a pattern as the whole name or its dotted suffix (its key's regex
/// `(.*\.)?{pattern}$`, for the plain names diffusers writes).
fn pattern(meta: &Map<String, Value>, component: &str, which: &str, name: &str) -> Option<f64> {
    let patterns = meta.get(&format!("{component}.{which}"))?.as_object()?;
    patterns.iter().find_map(|(p, v)| {
        let hit = name == p || name.ends_with(&format!(".{p}"));
        hit.then(|| v.as_f64()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::merge::lora_delta;
    use std::collections::HashMap;

    fn file(meta: Option<&str>) -> LoraFile {
        let t = |shape: (usize, usize), v: f32| Tensor::full(v, shape, &Device::Cpu).unwrap();
        let mut tensors = HashMap::new();
        for m in ["unet.a.to_q", "unet.b.to_k", "text_encoder.c.q_proj"] {
            tensors.insert(format!("{m}.lora_A.weight"), t((4, 8), 0.5));
            tensors.insert(format!("{m}.lora_B.weight"), t((6, 4), 0.25));
        }
        let mut f = LoraFile::from_tensors("peft", tensors).unwrap();
        if let Some(m) = meta {
            f.metadata.insert("lora_adapter_metadata".into(), m.into());
        }
        apply(&mut f).unwrap();
        f
    }

    fn delta(f: &LoraFile, key: &str) -> f32 {
        let m = f.modules.iter().find(|m| m.key == key).unwrap();
        lora_delta(m, &[6, 8], &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// lora_alpha 8 on r 4 doubles the deltas; a pattern overrides it for
    /// the modules it names; rsLoRA divides by sqrt(r); no metadata keeps
    /// alpha = rank.
    #[test]
    fn lora_alpha_r_and_patterns_scale_the_deltas_as_peft() {
        let plain = file(None);
        let base = delta(&plain, "unet.a.to_q");
        assert_eq!(base, 4.0 * 0.5 * 0.25);
        let meta = r#"{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"to_k": 2},
                       "text_encoder.r": 4, "text_encoder.lora_alpha": 4, "text_encoder.use_rslora": true}"#;
        let scaled = file(Some(meta));
        assert_eq!(delta(&scaled, "unet.a.to_q"), 2.0 * base);
        assert_eq!(delta(&scaled, "unet.b.to_k"), 0.5 * base);
        assert_eq!(delta(&scaled, "text_encoder.c.q_proj"), 2.0 * base);
    }
}
