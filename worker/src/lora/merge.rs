//! A LoRA module's weight delta: `(up · down) · alpha / rank`, for linear
//! layers and (LoCon) convolutions, with LoCon's Tucker `lora_mid` core. The
//! forms follow kohya-ss' `networks/lora.py` `merge_to` and ComfyUI's
//! `comfy/weight_adapter/lora.py` (read to learn).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::format::{LoraModule, Part};

/// Whether a module holds a plain LoRA (down / up, optional mid and alpha).
pub fn is_plain_lora(module: &LoraModule) -> bool {
    module.parts.contains_key(&Part::Down)
        && module.parts.contains_key(&Part::Up)
        && module
            .parts
            .keys()
            .all(|p| matches!(p, Part::Down | Part::Up | Part::Mid | Part::Alpha))
}

/// The delta, in f32 on `device`, a plain LoRA module adds to a weight of
/// shape `target` (`[out, in]` or `[out, in, kh, kw]`), before the user's
/// weight: `up [out, r(,1,1)] · down [r, in(,kh,kw)] · alpha / r`; with
/// `mid [r, r, kh, kw]` (down and up then 1x1) the delta is
/// `Σ_ij up[o,i] mid[i,j,k,l] down[j,c]`. A missing alpha means alpha = r
/// (diffusers' and PEFT's files). A 4-D delta for a 2-D weight (a 1x1 conv
/// LoRA on a linear `proj_in`) and the reverse are reshaped when the sizes
/// agree.
///
/// Errors: missing down / up, ranks that do not agree, a delta whose shape
/// does not fit the weight.
pub fn lora_delta(module: &LoraModule, target: &[usize], device: &Device) -> Result<Tensor> {
    let get = |p: &Part| -> Result<Option<Tensor>> {
        module
            .parts
            .get(p)
            .map(|t| Ok(t.to_device(device)?.to_dtype(DType::F32)?))
            .transpose()
    };
    let (Some(down), Some(up)) = (get(&Part::Down)?, get(&Part::Up)?) else {
        bail!("`{}` lacks its down or up tensor", module.key);
    };
    let rank = down.dim(0)?;
    if up.dim(1)? != rank {
        bail!(
            "`{}`: up {:?} and down {:?} do not share a rank",
            module.key,
            up.dims(),
            down.dims()
        );
    }
    let alpha = match get(&Part::Alpha)? {
        Some(a) => a.flatten_all()?.get(0)?.to_scalar::<f32>()?,
        None => rank as f32,
    };
    let out = up.dim(0)?;
    let up2 = up.flatten_from(1)?;
    if up2.dim(1)? != rank {
        bail!(
            "`{}`: only 1x1 up convolutions are supported, got {:?}",
            module.key,
            up.dims()
        );
    }
    let delta = match get(&Part::Mid)? {
        None => {
            let down2 = down.flatten_from(1)?;
            let d = up2.matmul(&down2)?;
            let mut dims = vec![out];
            dims.extend_from_slice(&down.dims()[1..]);
            d.reshape(dims)?
        }
        Some(mid) => {
            // mid [i, j, kh, kw], down [j, c] -> [i, c, kh, kw] -> up.
            let (ri, rj, kh, kw) = mid.dims4()?;
            let down2 = down.flatten_from(1)?;
            let c = down2.dim(1)?;
            if rj != rank || ri != rank {
                bail!(
                    "`{}`: lora_mid {:?} does not fit rank {rank}",
                    module.key,
                    mid.dims()
                );
            }
            let t = mid
                .permute((0, 2, 3, 1))?
                .reshape((ri * kh * kw, rj))?
                .matmul(&down2)?
                .reshape((ri, kh, kw, c))?
                .permute((0, 3, 1, 2))?
                .reshape((ri, c * kh * kw))?;
            up2.matmul(&t)?.reshape((out, c, kh, kw))?
        }
    };
    let delta = (delta * (alpha as f64 / rank as f64))?;
    fit(delta, target).with_context(|| format!("LoRA module `{}`", module.key))
}

/// Reshapes a delta to the weight's shape when only 1x1 spatial dims differ.
pub fn fit(delta: Tensor, target: &[usize]) -> Result<Tensor> {
    if delta.dims() == target {
        return Ok(delta);
    }
    let squeeze = |d: &[usize]| -> Vec<usize> {
        let mut d = d.to_vec();
        while d.len() > 2 && d.last() == Some(&1) {
            d.pop();
        }
        d
    };
    if squeeze(delta.dims()) == squeeze(target) {
        return Ok(delta.reshape(target)?);
    }
    bail!(
        "its delta {:?} does not fit the weight {:?} (a LoRA for another model?)",
        delta.dims(),
        target
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn t(v: Vec<f32>, dims: &[usize]) -> Tensor {
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// The Tucker form against the sum written out:
    /// delta[o,c,k,l] = Σ_ij up[o,i] mid[i,j,k,l] down[j,c] · alpha / r.
    #[test]
    fn lora_mid_is_the_tucker_product() {
        let (o, c, r, kh, kw) = (3, 2, 2, 3, 3);
        let f = |n: usize, s: f32| (0..n).map(|i| ((i as f32) * s).sin()).collect::<Vec<_>>();
        let (up, mid, down) = (f(o * r, 0.7), f(r * r * kh * kw, 0.3), f(r * c, 1.1));
        let mut parts = BTreeMap::new();
        parts.insert(Part::Up, t(up.clone(), &[o, r, 1, 1]));
        parts.insert(Part::Mid, t(mid.clone(), &[r, r, kh, kw]));
        parts.insert(Part::Down, t(down.clone(), &[r, c, 1, 1]));
        parts.insert(Part::Alpha, Tensor::new(1f32, &Device::Cpu).unwrap());
        let m = LoraModule {
            key: "m".into(),
            parts,
        };
        let got: Vec<f32> = lora_delta(&m, &[o, c, kh, kw], &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut n = 0;
        for oo in 0..o {
            for cc in 0..c {
                for k in 0..kh {
                    for l in 0..kw {
                        let mut want = 0f32;
                        for i in 0..r {
                            for j in 0..r {
                                want += up[oo * r + i]
                                    * mid[((i * r + j) * kh + k) * kw + l]
                                    * down[j * c + cc];
                            }
                        }
                        want *= 1.0 / r as f32;
                        assert!((got[n] - want).abs() < 1e-6, "{oo} {cc} {k} {l}");
                        n += 1;
                    }
                }
            }
        }
    }
}
