//! Reading an upscaler's state dict from disk, without running code.
//!
//! - `.safetensors`: Candle's safetensors reader.
//! - `.pth` / `.pt` (PyTorch's zip format, `torch.save` since 1.6): ONLY
//!   through Candle's pickle reader (`candle_core::pickle::PthTensors`), which
//!   interprets the pickle opcodes as data (dicts, tuples, tensor storages)
//!   and never imports or calls anything, so a malicious pickle cannot run
//!   code here. The state dict may be nested under one of the keys spandrel
//!   0.4.2's `canonicalize_state_dict` unwraps (`params_ema`, as Real-ESRGAN
//!   saves it, `params`, `state_dict`, ...).
//! - anything else is refused.
//!
//! Then, as spandrel does, a `module.` or `netG.` prefix common to every key
//! is removed.

use anyhow::{bail, Context, Result};
use candle_core::pickle::PthTensors;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Keys under which training scripts nest the state dict, in spandrel's order
/// (the first present wins: `params_ema` over `params`).
const WRAPPERS: [&str; 7] = [
    "model_state_dict",
    "state_dict",
    "params_ema",
    "params-ema",
    "params",
    "model",
    "net",
];

/// Reads every tensor of `path` onto the CPU, unwrapped and un-prefixed.
///
/// Errors: an unsupported extension, an unreadable or malformed file (a
/// pre-1.6 pickle that is no zip archive included), a file with no tensors.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let tensors = match ext.as_str() {
        "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {} as safetensors", path.display()))?,
        "pth" | "pt" => read_pth(path)?,
        _ => bail!(
            "{}: unsupported upscaler file type{}; use .safetensors, or .pth / .pt (read as data, never executed)",
            path.display(),
            if ext.is_empty() { String::new() } else { format!(" `.{ext}`") }
        ),
    };
    if tensors.is_empty() {
        bail!(
            "{}: no tensors in the file: not an upscaler",
            path.display()
        );
    }
    Ok(strip_common_prefix(tensors))
}

fn read_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    let context = || {
        format!(
            "reading {} as a PyTorch zip file (torch.save since 1.6; older pickles are not supported: re-save or convert to .safetensors)",
            path.display()
        )
    };
    // A wrapped state dict first: asking for a missing key is an error we skip.
    let mut found = None;
    for key in WRAPPERS {
        if let Ok(p) = PthTensors::new(path, Some(key)) {
            if !p.tensor_infos().is_empty() {
                found = Some(p);
                break;
            }
        }
    }
    let pth = match found {
        Some(p) => p,
        None => PthTensors::new(path, None).with_context(context)?,
    };
    let mut out = HashMap::new();
    for name in pth.tensor_infos().keys() {
        let t = pth
            .get(name)
            .with_context(context)?
            .with_context(|| format!("tensor `{name}` listed but not readable"))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Removes `module.` (DataParallel) or `netG.` when every key starts with it.
fn strip_common_prefix(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for prefix in ["module.", "netG."] {
        if tensors.keys().all(|k| k.starts_with(prefix)) {
            tensors = tensors
                .into_iter()
                .map(|(k, t)| (k[prefix.len()..].to_string(), t))
                .collect();
        }
    }
    tensors
}
