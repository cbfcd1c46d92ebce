//! The job's conditioning for the whole batch, through the family's
//! [`TextConditioner`](crate::model::conditioner::TextConditioner): the
//! prompt and (when guided) the negative prompt encoded to the same number
//! of windows, each repeated for the job's images; the job's textual-inversion
//! embeddings stand for their names in both.

use anyhow::Result;
use candle_core::Tensor;

use super::{Observer, Request};
use crate::model::denoiser::Conditioning;
use crate::model::embeddings::TextualInversions;
use crate::model::LoadedModel;

/// [uncond x n, cond x n] when `guided`, else [cond x n], for every part the
/// family has (context; pooled embedding; size time ids). Truncation
/// warnings go to `observer`.
pub fn for_batch(
    model: &LoadedModel,
    req: &Request,
    embeddings: &TextualInversions,
    guided: bool,
    observer: &mut dyn Observer,
) -> Result<Conditioning> {
    let conditioner = model.conditioner();
    let n = req.num_images;
    let cond = conditioner.tokenize_with(&req.prompt, "prompt", embeddings)?;
    let uncond = if guided {
        Some(conditioner.tokenize_with(
            req.negative_prompt.as_deref().unwrap_or_default(),
            "negative prompt",
            embeddings,
        )?)
    } else {
        None
    };
    let windows = cond
        .windows()
        .max(uncond.as_ref().map_or(0, |u| u.windows()));
    for w in std::iter::once(&cond).chain(uncond.as_ref()) {
        if let Some(w) = &w.warning {
            observer.warning("prompt_truncated", w);
        }
    }
    let cond = conditioner.encode(&cond, windows)?;
    let mut encoded = vec![cond];
    if let Some(uncond) = &uncond {
        let uncond = conditioner.encode_negative(
            req.negative_prompt.as_deref(),
            uncond,
            &encoded[0],
            windows,
        )?;
        encoded.insert(0, uncond);
    }
    let repeat = |parts: Vec<&Tensor>| -> Result<Tensor> {
        let all: Vec<&Tensor> = parts
            .into_iter()
            .flat_map(|t| std::iter::repeat_n(t, n))
            .collect();
        Ok(Tensor::cat(&all, 0)?)
    };
    let context = repeat(encoded.iter().map(|e| &e.context).collect())?;
    let pooled: Option<Vec<&Tensor>> = encoded.iter().map(|e| e.pooled.as_ref()).collect();
    let pooled = pooled.map(repeat).transpose()?;
    let batch = context.dim(0)?;
    let time_ids = conditioner
        .time_ids(req.width, req.height, model.device())?
        .map(|ids| ids.repeat((batch, 1)))
        .transpose()?;
    Ok(Conditioning {
        context,
        pooled,
        time_ids,
    })
}
