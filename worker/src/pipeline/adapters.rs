//! A job's LoRAs and textual-inversion embeddings, made ready before it runs:
//! the LoRA set merged into the model's weights (the set merged for the last
//! job is reused when it is the same, else restored first: `lora`), and the
//! embeddings the prompts name loaded for the text conditioner.

use anyhow::{Context, Result};
use sd_worker_sdk::LoraApplied;

use super::{Observer, Request};
use crate::lora::LoraUse;
use crate::model::embeddings::{TextualInversion, TextualInversions};
use crate::model::LoadedModel;

/// What the job runs with.
pub struct Adapters {
    /// The embeddings the prompt and negative prompt name.
    pub embeddings: TextualInversions,
    /// Each LoRA and how much of it matched the model (for the `complete` event).
    pub loras: Vec<LoraApplied>,
}

/// Merges `req.loras` into `model` (or restores the base weights for a job
/// without LoRAs) and loads `req.embeddings`. A LoRA's keys that name no
/// layer, or a kind of module not merged, are each a `warning` event naming
/// the file and the count.
///
/// Errors: a file that cannot be read, a LoRA that matches no layer or does
/// not fit its layers, an embedding of another width (the job fails with the
/// reason; the model is left without LoRAs).
pub fn prepare(
    model: &LoadedModel,
    req: &Request,
    observer: &mut dyn Observer,
) -> Result<Adapters> {
    let wanted: Vec<_> = req
        .loras
        .iter()
        .map(|c| (c.path.as_path(), c.stamp))
        .collect();
    let files = model.lora_files(&wanted)?;
    let uses: Vec<LoraUse> = files
        .into_iter()
        .zip(&req.loras)
        .map(|(file, c)| LoraUse {
            file,
            unet_weight: c.unet_weight as f32,
            text_encoder_weight: c.text_encoder_weight as f32,
        })
        .collect();
    let report = model.apply_loras(&uses)?;
    let mut loras = Vec::with_capacity(req.loras.len());
    for (m, c) in report.loras.iter().zip(&req.loras) {
        if let Some(first) = m.unmatched.first() {
            observer.warning(
                "lora_unmatched",
                &format!(
                    "LoRA `{}`: {} of its {} modules name no layer of this model and were skipped (e.g. `{first}`)",
                    c.name,
                    m.unmatched.len(),
                    m.unmatched.len() + m.unsupported.len() + m.matched_modules
                ),
            );
        }
        if let Some(first) = m.unsupported.first() {
            observer.warning(
                "lora_unsupported",
                &format!(
                    "LoRA `{}`: {} modules of a kind this worker does not merge (DoRA, bias or another LyCORIS type) were skipped (e.g. `{first}`)",
                    c.name,
                    m.unsupported.len()
                ),
            );
        }
        loras.push(LoraApplied {
            name: c.name.clone(),
            hash: c.hash.clone(),
            tensors: m.tensors as u32,
            matched_tensors: m.matched_tensors as u32,
            unet_weight: c.unet_weight,
            text_encoder_weight: c.text_encoder_weight,
        });
    }
    let mut embeddings = TextualInversions::new();
    for e in &req.embeddings {
        let ti =
            TextualInversion::load(&e.path).with_context(|| format!("embedding `{}`", e.name))?;
        embeddings.insert(ti);
    }
    Ok(Adapters { embeddings, loras })
}
