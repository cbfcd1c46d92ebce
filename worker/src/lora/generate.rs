//! Writes small random LoRAs for a loaded model's weights in each supported
//! format (tests, parity references, benchmarks).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::format::LoraFormat;
use super::keys::{dotted_prefix, kohya_prefixes, ldm_names};
use crate::model::conditioner::EncoderRole;
use crate::model::weights::{Network, WeightTable};

/// What a generated LoRA covers and how strong it is.
#[derive(Debug, Clone)]
pub struct LoraGenOptions {
    /// Also adapt the resnets' 3x3 `conv1`/`conv2` (LoCon; kohya format only).
    pub convs: bool,
    /// Give 3x3 conv modules a Tucker `lora_mid` core (LoCon's CP form).
    pub tucker: bool,
    /// Also adapt the text encoders' attention and MLP linears.
    pub text_encoders: bool,
    /// kohya's `alpha` (None: no alpha tensor, i.e. alpha = rank).
    pub alpha: Option<f32>,
    /// Half-width of the uniform distribution of `up`'s values (`down`'s is
    /// `1/sqrt(in)`).
    pub strength: f32,
    /// diffusers' `lora_adapter_metadata` JSON (`unet.r`, `unet.lora_alpha`,
    /// `unet.target_modules`, ...) to write in the file's `__metadata__`, as
    /// `save_lora_weights` does for diffusers / PEFT files.
    pub adapter_metadata: Option<String>,
}

impl Default for LoraGenOptions {
    fn default() -> Self {
        Self {
            convs: false,
            tucker: false,
            text_encoders: true,
            alpha: None,
            strength: 0.5,
            adapter_metadata: None,
        }
    }
}

/// Attention and feed-forward linears of a UNet / MMDiT (SD 3's context
/// stream too: `add_*_proj`, `to_add_out`, `ff_context`), attention and MLP
/// linears of a CLIP text encoder.
fn is_linear_target(network: Network, module: &str) -> bool {
    match network {
        Network::TextEncoder(_) => [
            ".self_attn.q_proj",
            ".self_attn.k_proj",
            ".self_attn.v_proj",
            ".self_attn.out_proj",
            ".mlp.fc1",
            ".mlp.fc2",
        ]
        .iter()
        .any(|s| module.ends_with(s)),
        Network::Unet | Network::Transformer => [
            ".to_q",
            ".to_k",
            ".to_v",
            ".to_out.0",
            ".ff.net.0.proj",
            ".ff.net.2",
            ".add_q_proj",
            ".add_k_proj",
            ".add_v_proj",
            ".to_add_out",
            ".ff_context.net.0.proj",
            ".ff_context.net.2",
        ]
        .iter()
        .any(|s| module.ends_with(s)),
    }
}

fn is_conv_target(network: Network, module: &str) -> bool {
    network == Network::Unet
        && module.contains(".resnets.")
        && (module.ends_with(".conv1") || module.ends_with(".conv2"))
}

/// Writes a LoRA of `rank` for `tables`' networks (the model's
/// [`crate::model::LoadedModel::weight_tables`]) to `path` in `format`:
/// every attention / feed-forward linear (and text-encoder linears, and
/// resnet convs, as `options` says) gets `down [rank, in(,kh,kw)]` and
/// `up [out, rank(,1,1)]` from a seeded uniform distribution. SDXL (a model
/// with an OpenCLIP-G encoder) gets kohya's LDM UNet names; `unet_layers`
/// is the UNet's `layers_per_block`. Returns the number of modules.
///
/// Errors: convs in a format other than kohya; nothing to adapt.
pub fn write_lora(
    path: &Path,
    format: LoraFormat,
    tables: &[(Network, Arc<WeightTable>)],
    unet_layers: Option<usize>,
    rank: usize,
    seed: u64,
    options: &LoraGenOptions,
) -> Result<usize> {
    if options.convs && format != LoraFormat::Kohya {
        bail!("conv (LoCon) LoRAs are written in kohya's format only");
    }
    let sdxl = tables
        .iter()
        .any(|(n, _)| *n == Network::TextEncoder(EncoderRole::OpenClipG));
    let pairs = unet_layers
        .map(super::keys::ldm_prefix_pairs)
        .unwrap_or_default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut modules = 0;
    for (network, table) in tables {
        let network = *network;
        if matches!(network, Network::TextEncoder(_)) && !options.text_encoders {
            continue;
        }
        for weight in table.names() {
            let Some(module) = weight.strip_suffix(".weight") else {
                continue;
            };
            let linear = is_linear_target(network, module);
            let conv = options.convs && is_conv_target(network, module);
            if !(linear || conv) {
                continue;
            }
            let dims = table
                .get(&weight)
                .context("weight vanished")?
                .dims()
                .to_vec();
            let (o, i) = (dims[0], dims[1]);
            let k = if dims.len() == 4 {
                (dims[2], dims[3])
            } else {
                (1, 1)
            };
            let mut uniform = |shape: &[usize], half: f32| -> Result<Tensor> {
                let u = Uniform::new(-half, half)?;
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n).map(|_| u.sample(&mut rng)).collect();
                Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
            };
            let fan_in = (i * k.0 * k.1) as f32;
            let spatial = dims.len() == 4;
            let tucker = spatial && options.tucker && k != (1, 1);
            let (down, mid) = if tucker {
                (
                    uniform(&[rank, i, 1, 1], 1.0 / (i as f32).sqrt())?,
                    Some(uniform(
                        &[rank, rank, k.0, k.1],
                        1.0 / (rank as f32).sqrt(),
                    )?),
                )
            } else if spatial {
                (uniform(&[rank, i, k.0, k.1], 1.0 / fan_in.sqrt())?, None)
            } else {
                (uniform(&[rank, i], 1.0 / fan_in.sqrt())?, None)
            };
            let up = if spatial {
                uniform(&[o, rank, 1, 1], options.strength)?
            } else {
                uniform(&[o, rank], options.strength)?
            };
            let (name, [d, u]) = match format {
                LoraFormat::Kohya => {
                    let flat = match network {
                        Network::Unet if sdxl => ldm_names(module, &pairs)
                            .into_iter()
                            .next()
                            .unwrap_or_else(|| module.to_string()),
                        _ => module.to_string(),
                    }
                    .replace('.', "_");
                    let prefixes = kohya_prefixes(network);
                    let p = if sdxl {
                        prefixes[prefixes.len() - 1]
                    } else {
                        prefixes[0]
                    };
                    (
                        format!("{p}{flat}"),
                        [".lora_down.weight", ".lora_up.weight"],
                    )
                }
                LoraFormat::Diffusers => (
                    format!("{}{module}", dotted_prefix(network)),
                    match network {
                        Network::TextEncoder(_) => [
                            ".lora_linear_layer.down.weight",
                            ".lora_linear_layer.up.weight",
                        ],
                        _ => [".lora.down.weight", ".lora.up.weight"],
                    },
                ),
                LoraFormat::Peft => (
                    format!("{}{module}", dotted_prefix(network)),
                    [".lora_A.weight", ".lora_B.weight"],
                ),
            };
            if let (Some(a), LoraFormat::Kohya) = (options.alpha, format) {
                out.insert(format!("{name}.alpha"), Tensor::new(a, &Device::Cpu)?);
            }
            if let Some(mid) = mid {
                out.insert(format!("{name}.lora_mid.weight"), mid);
            }
            out.insert(format!("{name}{d}"), down);
            out.insert(format!("{name}{u}"), up);
            modules += 1;
        }
    }
    if modules == 0 {
        bail!("no layer of the model to write a LoRA for");
    }
    let out: HashMap<String, Tensor> = out
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let metadata = options
        .adapter_metadata
        .as_ref()
        .map(|m| HashMap::from([("lora_adapter_metadata".to_string(), m.clone())]));
    safetensors::serialize_to_file(&out, metadata, path)
        .with_context(|| format!("writing LoRA {}", path.display()))?;
    Ok(modules)
}
