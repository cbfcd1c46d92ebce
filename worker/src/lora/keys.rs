//! LoRA module keys to the model's weights: each network's recorded weight
//! names (diffusers / transformers), under every name LoRA files use for them
//! — kohya's underscored names (`lora_unet_down_blocks_0_..._to_q`,
//! `lora_te1_text_model_encoder_layers_0_self_attn_q_proj`), SDXL kohya's LDM
//! names (`lora_unet_input_blocks_4_1_...`, through the single-file loader's
//! LDM -> diffusers map), and the dotted diffusers / PEFT names
//! (`unet.down_blocks.0...`, `text_encoder_2.text_model...`, or bare under
//! `base_model.model.`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::conditioner::EncoderRole;
use crate::model::single_file::keys::{unet_key, RESNET_RENAMES};
use crate::model::weights::{Network, WeightTable};

/// A weight a LoRA module adapts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub network: Network,
    /// The weight's name in its network, ending in `.weight`.
    pub weight: String,
}

/// Every name a LoRA may give each weight of a model.
#[derive(Default)]
pub struct Targets {
    by_key: HashMap<String, Target>,
}

/// kohya's prefix for a network's modules.
pub fn kohya_prefixes(network: Network) -> &'static [&'static str] {
    match network {
        Network::Unet | Network::Transformer => &["lora_unet_"],
        Network::TextEncoder(EncoderRole::OpenClipG) => &["lora_te2_"],
        Network::TextEncoder(_) => &["lora_te_", "lora_te1_"],
    }
}

/// diffusers' / PEFT's component prefix for a network.
pub fn dotted_prefix(network: Network) -> &'static str {
    match network {
        Network::Unet => "unet.",
        Network::Transformer => "transformer.",
        Network::TextEncoder(EncoderRole::OpenClipG) => "text_encoder_2.",
        Network::TextEncoder(_) => "text_encoder.",
    }
}

/// (LDM prefix, diffusers prefix) pairs of a UNet with `layers` resnets per
/// block, both ending in `.`, from [`unet_key`].
pub fn ldm_prefix_pairs(layers: usize) -> Vec<(String, String)> {
    let per = layers + 1;
    let mut candidates: Vec<String> = [
        "time_embed.0.",
        "time_embed.2.",
        "label_emb.0.0.",
        "label_emb.0.2.",
        "input_blocks.0.0.",
        "out.0.",
        "out.2.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let resnet = |p: &str, out: &mut Vec<String>| {
        for (from, _) in RESNET_RENAMES {
            out.push(format!("{p}{from}"));
        }
    };
    for i in 1..=4 * per {
        resnet(&format!("input_blocks.{i}.0."), &mut candidates);
        candidates.push(format!("input_blocks.{i}.0.op."));
        candidates.push(format!("input_blocks.{i}.1."));
    }
    for j in [0, 2] {
        resnet(&format!("middle_block.{j}."), &mut candidates);
    }
    candidates.push("middle_block.1.".into());
    for i in 0..4 * per {
        resnet(&format!("output_blocks.{i}.0."), &mut candidates);
        candidates.push(format!("output_blocks.{i}.1."));
        candidates.push(format!("output_blocks.{i}.1.conv."));
        candidates.push(format!("output_blocks.{i}.2.conv."));
    }
    candidates
        .into_iter()
        .filter_map(|c| {
            let d = unet_key(&format!("{c}@"), layers)?;
            Some((c, d.strip_suffix('@')?.to_string()))
        })
        .collect()
}

/// The LDM names of a diffusers UNet module (several where LDM has aliases).
pub fn ldm_names(module: &str, pairs: &[(String, String)]) -> Vec<String> {
    let dotted = format!("{module}.");
    let best = pairs
        .iter()
        .filter(|(_, d)| dotted.starts_with(d.as_str()))
        .map(|(_, d)| d.len())
        .max();
    let Some(best) = best else { return vec![] };
    pairs
        .iter()
        .filter(|(_, d)| d.len() == best && dotted.starts_with(d.as_str()))
        .map(|(l, d)| {
            format!("{l}{}", &dotted[d.len()..])
                .trim_end_matches('.')
                .to_string()
        })
        .collect()
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Targets({} names)", self.by_key.len())
    }
}

impl Targets {
    /// Every weight of `tables` under every name LoRAs use; `unet_layers` is
    /// the UNet's `layers_per_block` (for LDM names).
    pub fn new(tables: &[(Network, Arc<WeightTable>)], unet_layers: Option<usize>) -> Self {
        let pairs = unet_layers.map(ldm_prefix_pairs).unwrap_or_default();
        let mut by_key = HashMap::new();
        for (network, table) in tables {
            let network = *network;
            for weight in table.names() {
                let Some(module) = weight.strip_suffix(".weight") else {
                    continue;
                };
                let target = Target {
                    network,
                    weight: weight.clone(),
                };
                let mut names = vec![module.to_string()];
                if network == Network::Unet {
                    names.extend(ldm_names(module, &pairs));
                }
                for name in &names {
                    let flat = name.replace('.', "_");
                    for p in kohya_prefixes(network) {
                        by_key.insert(format!("{p}{flat}"), target.clone());
                    }
                }
                by_key.insert(
                    format!("{}{module}", dotted_prefix(network)),
                    target.clone(),
                );
                // Bare PEFT names: text-model names are the first encoder's,
                // the rest the denoiser's.
                let bare = match network {
                    Network::Unet | Network::Transformer => true,
                    Network::TextEncoder(role) => role != EncoderRole::OpenClipG,
                };
                if bare {
                    by_key.entry(module.to_string()).or_insert(target);
                }
            }
        }
        Self { by_key }
    }

    /// Whether no weight is known (a profile built without a model).
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The weight a module key (as [`super::format::LoraModule::key`]) adapts.
    pub fn resolve(&self, key: &str) -> Option<&Target> {
        let key = key.strip_prefix("base_model.model.").unwrap_or(key);
        self.by_key.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_names_invert_the_single_file_map() {
        let pairs = ldm_prefix_pairs(2);
        let names = ldm_names(
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            &pairs,
        );
        assert_eq!(names, ["input_blocks.4.1.transformer_blocks.0.attn1.to_q"]);
        let names = ldm_names("up_blocks.0.resnets.2.conv1", &pairs);
        assert_eq!(names, ["output_blocks.2.0.in_layers.2"]);
        let names = ldm_names("mid_block.attentions.0.proj_in", &pairs);
        assert_eq!(names, ["middle_block.1.proj_in"]);
    }
}
