//! LoRAs merged into a loaded model's weights: read a file ([`format`]), map
//! its modules to the model's weights ([`keys`]), compute each delta
//! ([`merge`]) and write `W + weight · delta` in place through the weight
//! seam ([`crate::model::weights`]). Switching sets restores the base values
//! kept from the previous merge first; the same set again does nothing.

pub mod adapter_metadata;
pub mod format;
pub mod generate;
pub mod keys;
pub mod lycoris;
pub mod merge;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use format::{LoraFile, LoraFormat, LoraModule, Part};
use keys::{Target, Targets};

use crate::model::weights::Network;
use crate::model::LoadedModel;

/// One LoRA of a request's set, with its strengths (A1111's `<lora:name:w>`
/// sets both to w). 0 leaves the model as it is.
#[derive(Debug, Clone)]
pub struct LoraUse {
    pub file: Arc<LoraFile>,
    /// Multiplies the deltas of UNet / transformer weights.
    pub unet_weight: f32,
    /// Multiplies the deltas of text-encoder weights.
    pub text_encoder_weight: f32,
}

impl LoraUse {
    fn weight_for(&self, network: Network) -> f32 {
        match network {
            Network::TextEncoder(_) => self.text_encoder_weight,
            Network::Unet | Network::Transformer => self.unet_weight,
        }
    }
}

/// How one LoRA of a set matched the model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraMatch {
    pub name: String,
    pub format: LoraFormat,
    /// Tensors of the file.
    pub tensors: usize,
    /// Tensors belonging to modules merged into a weight.
    pub matched_tensors: usize,
    /// Modules merged into a weight.
    pub matched_modules: usize,
    /// Module keys that name no weight of this model.
    pub unmatched: Vec<String>,
    /// Module keys of a kind not merged (LyCORIS LoHa / LoKr until
    /// [`lycoris_delta`] handles them, DoRA, `diff` tensors).
    pub unsupported: Vec<String>,
}

/// What [`LoadedModel::apply_loras`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraReport {
    pub loras: Vec<LoraMatch>,
    /// The set was already merged: nothing was done.
    pub reused: bool,
    /// Weights holding a merged delta now.
    pub touched_weights: usize,
    /// Bytes kept to restore them (one copy of each, in the model dtype).
    pub backup_bytes: u64,
    /// Time spent restoring and merging.
    pub elapsed: Duration,
}

/// The set merged into a model and the base values it overwrote.
#[derive(Default)]
pub struct Applied {
    /// The files read for the last job, by path and version, so the next job
    /// with the same files reuses them (and the merged set) without reading.
    files: Vec<(std::path::PathBuf, crate::catalog::Stamp, Arc<LoraFile>)>,
    set: Vec<(Arc<LoraFile>, u32, u32)>,
    originals: BTreeMap<Target, crate::model::weights::Snapshot>,
    report: Option<LoraReport>,
}

fn set_key(set: &[LoraUse]) -> Vec<(Arc<LoraFile>, u32, u32)> {
    set.iter()
        .map(|u| {
            (
                u.file.clone(),
                u.unet_weight.to_bits(),
                u.text_encoder_weight.to_bits(),
            )
        })
        .collect()
}

fn same_set(a: &[(Arc<LoraFile>, u32, u32)], b: &[(Arc<LoraFile>, u32, u32)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(&x.0, &y.0) && x.1 == y.1 && x.2 == y.2)
}

/// The module's tensors under their file suffixes, as [`lycoris`] takes them.
fn lycoris_tensors(module: &LoraModule) -> lycoris::ModuleTensors {
    let mut t = lycoris::ModuleTensors::new();
    for (part, tensor) in &module.parts {
        let suffix = match part {
            Part::Down => "lora_down",
            Part::Up => "lora_up",
            Part::Mid => "lora_mid",
            Part::Alpha => "alpha",
            Part::Other(name) => name.as_str(),
        };
        t.insert(suffix, tensor.clone());
    }
    t
}

/// Whether [`lycoris::delta`] merges this module: LoHa (`hada_*`) and LoKr
/// (`lokr_*`). DoRA (`dora_scale`) modules are reported as unsupported.
pub fn lycoris_handles(module: &LoraModule) -> bool {
    let t = lycoris_tensors(module);
    t.get("dora_scale").is_none()
        && matches!(
            lycoris::kind(&t),
            Some(lycoris::LycorisKind::LoHa | lycoris::LycorisKind::LoKr)
        )
}

/// The f32 delta of a LyCORIS module for a weight of shape `target` (before
/// the user's weight), on `device`; called only for modules
/// [`lycoris_handles`] accepts (formulas: [`lycoris`]).
///
/// Errors: tensors that do not form the module or do not fit `target`.
pub fn lycoris_delta(
    module: &LoraModule,
    target: &[usize],
    device: &candle_core::Device,
) -> Result<Tensor> {
    let delta = lycoris::delta(&lycoris_tensors(module), target, 1.0)?
        .with_context(|| format!("`{}` is not a LyCORIS module", module.key))?;
    Ok(delta.to_device(device)?)
}

/// A matched module's delta: plain LoRA, or LyCORIS.
fn module_delta(
    module: &LoraModule,
    target: &[usize],
    device: &candle_core::Device,
) -> Result<Tensor> {
    if merge::is_plain_lora(module) {
        merge::lora_delta(module, target, device)
    } else {
        lycoris_delta(module, target, device)
    }
}

/// Matches a set against the model: (target -> [(use index, module index)]),
/// and the per-LoRA report. Errors when a LoRA matches nothing.
#[allow(clippy::type_complexity)]
fn plan(
    set: &[LoraUse],
    targets: &Targets,
) -> Result<(BTreeMap<Target, Vec<(usize, usize)>>, Vec<LoraMatch>)> {
    let mut plan: BTreeMap<Target, Vec<(usize, usize)>> = BTreeMap::new();
    let mut matches = Vec::new();
    for (u, lora) in set.iter().enumerate() {
        let f = &lora.file;
        let mut m = LoraMatch {
            name: f.name.clone(),
            format: f.format,
            tensors: f.tensor_count,
            matched_tensors: 0,
            matched_modules: 0,
            unmatched: vec![],
            unsupported: vec![],
        };
        for (i, module) in f.modules.iter().enumerate() {
            let Some(target) = targets.resolve(&module.key) else {
                m.unmatched.push(module.key.clone());
                continue;
            };
            if !(merge::is_plain_lora(module) || lycoris_handles(module)) {
                m.unsupported.push(module.key.clone());
                continue;
            }
            m.matched_modules += 1;
            m.matched_tensors += module.parts.len();
            plan.entry(target.clone()).or_default().push((u, i));
        }
        if m.matched_modules == 0 {
            bail!(
                "LoRA `{}` matches no layer of this model ({} modules: {} unmatched, {} unsupported{})",
                f.name,
                f.modules.len(),
                m.unmatched.len(),
                m.unsupported.len(),
                m.unmatched
                    .first()
                    .map(|k| format!(", e.g. `{k}`"))
                    .unwrap_or_default()
            );
        }
        matches.push(m);
    }
    Ok((plan, matches))
}

impl LoadedModel {
    /// Merges a LoRA set into the UNet / transformer and text-encoder
    /// weights, replacing the set merged before (restored bit-exactly from
    /// the kept base values). The same set (same files, same weights) again
    /// does nothing. Each touched weight becomes
    /// `round(W + Σ weight · (up · down) · alpha / rank)`, summed in f32 and
    /// rounded once to the model dtype (diffusers' `fuse_lora`).
    ///
    /// Memory: one copy of each touched weight (model dtype) while a set is
    /// merged, plus one weight's f32 delta while merging.
    ///
    /// Errors: a LoRA matching no layer, a delta that does not fit its
    /// weight (LoRA for another model); the model is then left with no LoRA.
    /// Jobs must not run on the model while this runs.
    pub fn apply_loras(&self, set: &[LoraUse]) -> Result<LoraReport> {
        let started = Instant::now();
        let mut state = self.lora_state().lock().unwrap_or_else(|e| e.into_inner());
        let key = set_key(set);
        if same_set(&state.set, &key) {
            if let Some(r) = &state.report {
                return Ok(LoraReport {
                    reused: true,
                    elapsed: started.elapsed(),
                    ..r.clone()
                });
            }
        }
        let layers = self.unet_config().map(|c| c.layers_per_block);
        let targets = Targets::new(self.weight_tables(), layers);
        let (plan, matches) = plan(set, &targets)?;
        self.restore(&mut state)?;
        let result = self.merge_plan(set, &plan, &mut state);
        if let Err(e) = result {
            self.restore(&mut state)
                .context("restoring the base weights after a failed merge")?;
            return Err(e);
        }
        let report = LoraReport {
            loras: matches,
            reused: false,
            touched_weights: state.originals.len(),
            backup_bytes: state.originals.values().map(|s| s.bytes()).sum(),
            elapsed: started.elapsed(),
        };
        state.set = key;
        state.report = Some(report.clone());
        Ok(report)
    }

    /// The LoRA files at `wanted` (path and version), read from disk unless
    /// the last call asked for the same file in the same version; only this
    /// call's files are kept afterwards (memory: the current set's files).
    ///
    /// Errors: a file that cannot be read as a LoRA ([`LoraFile::read`]).
    pub fn lora_files(
        &self,
        wanted: &[(&std::path::Path, crate::catalog::Stamp)],
    ) -> Result<Vec<Arc<LoraFile>>> {
        let mut state = self.lora_state().lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = Vec::with_capacity(wanted.len());
        for &(path, stamp) in wanted {
            let known = state
                .files
                .iter()
                .find(|(p, s, _)| p == path && *s == stamp)
                .map(|(_, _, f)| f.clone());
            let file = match known {
                Some(f) => f,
                None => Arc::new(LoraFile::read(path)?),
            };
            kept.push((path.to_path_buf(), stamp, file));
        }
        let files = kept.iter().map(|(_, _, f)| f.clone()).collect();
        state.files = kept;
        Ok(files)
    }

    /// The most memory a merged LoRA set keeps: one copy of every weight a
    /// LoRA can adapt (2-D and 4-D `.weight` tensors of the denoiser and the
    /// text encoders, embedding tables excepted), in bytes.
    pub fn lora_merge_bytes(&self) -> u64 {
        self.weight_tables()
            .iter()
            .flat_map(|(_, table)| {
                table
                    .names()
                    .into_iter()
                    .filter(|n| n.ends_with(".weight") && !n.contains("embedding"))
                    .filter_map(|n| table.info(&n))
                    .collect::<Vec<_>>()
            })
            .filter(|(dims, _)| matches!(dims.len(), 2 | 4))
            .map(|(_, bytes)| bytes)
            .sum()
    }

    /// Restores the base weights (no LoRA); what `apply_loras(&[])` does.
    pub fn remove_loras(&self) -> Result<()> {
        self.apply_loras(&[]).map(|_| ())
    }

    fn restore(&self, state: &mut Applied) -> Result<()> {
        let originals = std::mem::take(&mut state.originals);
        state.set.clear();
        state.report = None;
        for (target, base) in &originals {
            self.table(target.network)?.restore(&target.weight, base)?;
        }
        Ok(())
    }

    fn table(&self, network: Network) -> Result<&Arc<crate::model::weights::WeightTable>> {
        self.weights(network)
            .with_context(|| format!("the model has no {}", network.name()))
    }

    fn merge_plan(
        &self,
        set: &[LoraUse],
        plan: &BTreeMap<Target, Vec<(usize, usize)>>,
        state: &mut Applied,
    ) -> Result<()> {
        for (target, uses) in plan {
            let table = self.table(target.network)?;
            let base = table
                .get(&target.weight)
                .with_context(|| format!("no weight `{}`", target.weight))?;
            let mut sum: Option<Tensor> = None;
            let mut weighted = false;
            for &(u, i) in uses {
                let w = set[u].weight_for(target.network);
                weighted |= w != 0.0;
                let module = &set[u].file.modules[i];
                // The delta is computed even at weight 0 so a LoRA that does
                // not fit the model is refused whatever its weight.
                let delta = module_delta(module, base.dims(), base.device())
                    .with_context(|| format!("LoRA `{}`", set[u].file.name))?;
                let delta = (delta * w as f64)?;
                sum = Some(match sum {
                    None => delta,
                    Some(s) => (s + delta)?,
                });
            }
            // Weight 0 for this network: the weight is left as it is (an int8
            // weight quantised again could move by an ulp of its scale).
            let Some(sum) = sum.filter(|_| weighted) else {
                continue;
            };
            let merged = (base.to_dtype(DType::F32)? + sum)?.to_dtype(base.dtype())?;
            state
                .originals
                .insert(target.clone(), table.snapshot(&target.weight)?);
            table.write(&target.weight, &merged)?;
        }
        Ok(())
    }
}

/// Times merging `set` into `model` and removing it again (for `sd-worker
/// bench`): (apply, remove).
pub fn time_apply_remove(model: &LoadedModel, set: &[LoraUse]) -> Result<(Duration, Duration)> {
    model.remove_loras()?;
    let t = Instant::now();
    model.apply_loras(set)?;
    let apply = t.elapsed();
    let t = Instant::now();
    model.remove_loras()?;
    Ok((apply, t.elapsed()))
}
