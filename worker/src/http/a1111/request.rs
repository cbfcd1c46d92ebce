//! A1111's `txt2img` / `img2img` request and its mapping onto our contract's
//! job body. Fields we use are mapped; the rest are accepted (A1111's own
//! server ignores unknown fields too) and those that would change the picture
//! are named in the answer's `info.warnings` ([`SdRequest::ignored`]).

use base64::Engine as _;
use sd_worker_sdk::{ApiError, ErrorCode, Rng, SCHEDULERS};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::adapter::parse_json;
use crate::http::error::HttpError;

/// The fields of A1111's `StableDiffusionProcessingTxt2Img` /
/// `...Img2Img` request that this worker reads. Absent fields take the
/// loaded model's defaults (`GET /v1/info`), not A1111's.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SdRequest {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default)]
    pub steps: Option<u32>,
    /// Our `guidance_scale`.
    #[serde(default)]
    pub cfg_scale: Option<f64>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    /// -1 (or any negative): random. Image `i` uses `seed + i`, as in A1111.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Images per job: `batch_size * n_iter` images in one job (our `num_images`).
    #[serde(default)]
    pub batch_size: Option<u32>,
    #[serde(default)]
    pub n_iter: Option<u32>,
    /// A1111 sampler name: "Euler a", "DPM++ 2M", or the pre-1.9 "DPM++ 2M Karras".
    #[serde(default)]
    pub sampler_name: Option<String>,
    /// Older clients' name for `sampler_name` (used when that is absent).
    #[serde(default)]
    pub sampler_index: Option<String>,
    /// A1111 1.9's schedule type: "Automatic" (or absent), "Karras".
    #[serde(default)]
    pub scheduler: Option<String>,
    /// img2img: our `strength`.
    #[serde(default)]
    pub denoising_strength: Option<f64>,
    /// img2img: base64 images; the first is used.
    #[serde(default)]
    pub init_images: Option<Vec<String>>,
    /// img2img: white repaints (black with `inpainting_mask_invert: 1`).
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default)]
    pub mask_blur: Option<u32>,
    /// 1: repaint the mask's black pixels instead of its white ones.
    #[serde(default)]
    pub inpainting_mask_invert: Option<u32>,
    /// 0 just resize (stretch), 1 crop and resize (crop), 2 resize and fill (fit), 3 latent upscale (stretch).
    #[serde(default)]
    pub resize_mode: Option<u32>,
    /// Only 1 (`original`) is what this worker does; other values run as 1, with a warning.
    #[serde(default)]
    pub inpainting_fill: Option<u32>,
    /// `randn_source` ("GPU", "CPU", "NV": A1111's noise source) chooses our
    /// `rng` ([`SdRequest::rng`]); other keys are ignored and listed in
    /// `info.warnings`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub override_settings: Option<Map<String, Value>>,
    /// false: `images` comes back empty.
    #[serde(default)]
    pub send_images: Option<bool>,
    /// Ignored: nothing is written to disk.
    #[serde(default)]
    pub save_images: Option<bool>,
    /// The body as sent, echoed in the answer's `parameters`.
    #[serde(skip)]
    pub raw: Map<String, Value>,
}

/// A 422 `invalid_value` naming `field` (an A1111 field name).
pub fn refuse(field: &str, message: impl Into<String>) -> HttpError {
    ApiError::new(ErrorCode::InvalidValue, message)
        .with_field(field)
        .into()
}

impl SdRequest {
    /// Reads the body: a JSON object whose known fields have A1111's types.
    pub fn parse(bytes: &[u8]) -> Result<Self, HttpError> {
        let raw: Map<String, Value> = parse_json(bytes)?;
        let mut req: SdRequest = parse_json(bytes)?;
        req.raw = raw;
        Ok(req)
    }

    /// `(batch_size, n_iter)`, 1 each when absent.
    pub fn batch(&self) -> (u32, u32) {
        (self.batch_size.unwrap_or(1), self.n_iter.unwrap_or(1))
    }

    /// Our contract's job body. `img2img` needs `init_images`; with a `mask`
    /// the job is `image_inpaint`, else `image_transform`.
    pub fn to_job_body(&self, img2img: bool) -> Result<Map<String, Value>, HttpError> {
        let mut body = Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                body.insert(k.into(), v);
            }
        };
        put("prompt", json!(self.prompt.clone().unwrap_or_default()));
        put("negative_prompt", json!(self.negative_prompt));
        put("steps", json!(self.steps));
        put("guidance_scale", json!(self.cfg_scale));
        put("width", json!(self.width));
        put("height", json!(self.height));
        put("seed", json!(self.seed));
        let (batch, iters) = self.batch();
        let n = batch
            .checked_mul(iters)
            .ok_or_else(|| refuse("batch_size", "`batch_size` times `n_iter` is too large"))?;
        if self.batch_size.is_some() || self.n_iter.is_some() {
            put("num_images", json!(n));
        }
        put("scheduler", json!(self.scheduler_spelling()?));
        put("rng", json!(self.rng()?.name()));
        if !img2img {
            body.insert("operation".into(), json!("image_generation"));
            return Ok(body);
        }
        let image = self
            .init_images
            .as_ref()
            .and_then(|v| v.first())
            .ok_or_else(|| {
                HttpError::from(
                    ApiError::new(ErrorCode::MissingField, "`init_images` needs one image")
                        .with_field("init_images"),
                )
            })?;
        body.insert("image".into(), json!(image));
        let op = match &self.mask {
            Some(mask) => {
                body.insert("mask".into(), json!(mask));
                if self.inpainting_mask_invert.unwrap_or(0) != 0 {
                    body.insert(INVERT_KEY.into(), json!(true));
                }
                if let Some(blur) = self.mask_blur {
                    body.insert("mask_blur".into(), json!(blur));
                }
                "image_inpaint"
            }
            None => "image_transform",
        };
        body.insert("operation".into(), json!(op));
        if let Some(s) = self.denoising_strength {
            body.insert("strength".into(), json!(s));
        }
        if let Some(mode) = self.resize_mode {
            let ours = match mode {
                0 | 3 => "stretch",
                1 => "crop",
                2 => "fit",
                _ => {
                    return Err(refuse(
                        "resize_mode",
                        format!("`resize_mode` must be 0 to 3, not {mode}"),
                    ))
                }
            };
            body.insert("resize_mode".into(), json!(ours));
        }
        Ok(body)
    }

    /// The scheduler spelling our validation resolves: `sampler_name` alone
    /// (any spelling of the contract's table: "Euler a", "DPM++ 2M Karras"),
    /// or A1111 1.9's pair `sampler_name` + `scheduler` ("DPM++ 2M" + "Karras")
    /// folded into the one name the table gives that pair. A schedule the
    /// sampler does not have here is a 422 naming `scheduler`.
    pub fn scheduler_spelling(&self) -> Result<Option<String>, HttpError> {
        let Some(sampler) = self
            .sampler_name
            .as_deref()
            .or(self.sampler_index.as_deref())
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(None);
        };
        let schedule = self
            .scheduler
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("automatic"));
        let Some(schedule) = schedule else {
            return Ok(Some(sampler.to_string()));
        };
        SCHEDULERS
            .iter()
            .find(|row| {
                row.a1111_sampler.eq_ignore_ascii_case(sampler)
                    && row
                        .a1111_schedule
                        .is_some_and(|s| s.eq_ignore_ascii_case(schedule))
            })
            .map(|row| Some(row.a1111.to_string()))
            .ok_or_else(|| {
                refuse(
                    "scheduler",
                    format!(
                        "sampler `{sampler}` with schedule `{schedule}` is not available here; \
                         see GET /sdapi/v1/samplers and /sdapi/v1/schedulers"
                    ),
                )
            })
    }

    /// Our `rng` for A1111's `override_settings.randn_source`, whose values
    /// are A1111's: "GPU" (A1111's default: `torch.randn` on the CUDA device)
    /// and "NV" (A1111's CPU reproduction of it, the same values) are `nv`;
    /// "CPU" (torch's CPU generator) is `torch-cpu`. Absent: `nv`, the
    /// picture A1111 draws by default. Any other value is a 422 naming
    /// `override_settings.randn_source`.
    pub fn rng(&self) -> Result<Rng, HttpError> {
        let Some(source) = self
            .override_settings
            .as_ref()
            .and_then(|m| m.get(RANDN_SOURCE))
        else {
            return Ok(Rng::Nv);
        };
        match source.as_str() {
            Some("GPU" | "NV") => Ok(Rng::Nv),
            Some("CPU") => Ok(Rng::TorchCpu),
            _ => Err(refuse(
                "override_settings.randn_source",
                format!("`randn_source` must be \"GPU\", \"CPU\" or \"NV\", not {source}"),
            )),
        }
    }

    /// What was sent but not used and would change the result, for `info.warnings`.
    pub fn ignored(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(settings) = self.override_settings.as_ref() {
            let keys: Vec<&str> = settings
                .keys()
                .map(String::as_str)
                .filter(|k| *k != RANDN_SOURCE)
                .collect();
            if !keys.is_empty() {
                out.push(format!("override_settings ignored: {}", keys.join(", ")));
            }
        }
        if self.mask.is_some() && self.inpainting_fill.is_some_and(|f| f != 1) {
            out.push(
                "inpainting_fill ignored: the masked area starts from the original (1)".into(),
            );
        }
        let on = |k: &str| match self.raw.get(k) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
            _ => false,
        };
        for key in [
            "enable_hr",
            "restore_faces",
            "tiling",
            "script_name",
            "alwayson_scripts",
            "styles",
            "subseed_strength",
            "inpaint_full_res",
            "refiner_checkpoint",
        ] {
            if on(key) {
                out.push(format!("{key} ignored: not supported by this worker"));
            }
        }
        out
    }
}

/// A1111's setting naming its noise source (`shared.opts.randn_source`).
const RANDN_SOURCE: &str = "randn_source";

/// Marks a body whose mask must be inverted before validation (removed then).
const INVERT_KEY: &str = "__a1111_invert_mask";

/// `inpainting_mask_invert: 1`: the mask is decoded and its grey levels
/// inverted (and re-encoded as PNG), so that ours (white repaints) repaints
/// what A1111 would. Runs inside validation's decoding slot. An undecodable
/// mask is a 400 `invalid_image` naming `mask`.
pub fn invert_mask_if_asked(body: &mut Map<String, Value>) -> Result<(), HttpError> {
    if body.remove(INVERT_KEY).is_none() {
        return Ok(());
    }
    let Some(Value::String(mask)) = body.get("mask") else {
        return Ok(());
    };
    let bad =
        |m: String| HttpError::from(ApiError::new(ErrorCode::InvalidImage, m).with_field("mask"));
    let data = mask.rsplit_once(',').map_or(mask.as_str(), |(_, d)| d);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(format!("`mask` is not base64: {e}")))?;
    let mut grey = image::load_from_memory(&bytes)
        .map_err(|e| bad(format!("`mask` is not an image: {e}")))?
        .to_luma8();
    image::imageops::invert(&mut grey);
    let mut png = Vec::new();
    grey.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| bad(format!("`mask` could not be re-encoded: {e}")))?;
    body.insert(
        "mask".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(png)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> SdRequest {
        SdRequest::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a1111_fields_become_the_contract_fields() {
        let body = req(
            json!({"prompt": "p", "cfg_scale": 6.5, "seed": -1, "batch_size": 2,
            "n_iter": 3, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 4}),
        )
        .to_job_body(false)
        .unwrap();
        assert_eq!(body["guidance_scale"], json!(6.5));
        assert_eq!(body["num_images"], json!(6));
        assert_eq!(body["seed"], json!(-1));
        assert_eq!(body["scheduler"], json!("DPM++ 2M Karras"));
        assert_eq!(body["operation"], json!("image_generation"));
        assert_eq!(body["rng"], json!("nv"));
    }

    #[test]
    fn randn_source_chooses_the_rng_as_a1111s_setting_does() {
        let rng = |source: Value| {
            req(json!({"override_settings": {"randn_source": source, "CLIP_stop_at_last_layers": 2}}))
                .to_job_body(false)
                .map(|b| b["rng"].clone())
        };
        assert_eq!(rng(json!("GPU")).unwrap(), json!("nv"));
        assert_eq!(rng(json!("NV")).unwrap(), json!("nv"));
        assert_eq!(rng(json!("CPU")).unwrap(), json!("torch-cpu"));
        for bad in [json!("cpu"), json!("chacha"), json!(1)] {
            let e = rng(bad.clone()).unwrap_err();
            assert_eq!(
                e.error.field.as_deref(),
                Some("override_settings.randn_source"),
                "{bad}"
            );
        }
        let r = req(
            json!({"override_settings": {"randn_source": "CPU", "CLIP_stop_at_last_layers": 2}}),
        );
        assert_eq!(
            r.ignored(),
            vec!["override_settings ignored: CLIP_stop_at_last_layers".to_string()]
        );
        let r = req(json!({"override_settings": {"randn_source": "NV"}}));
        assert!(r.ignored().is_empty(), "{:?}", r.ignored());
    }

    #[test]
    fn img2img_maps_mask_strength_and_resize_mode() {
        let body = req(
            json!({"prompt": "p", "init_images": ["AAAA", "BBBB"], "mask": "CCCC",
            "denoising_strength": 0.5, "resize_mode": 2, "mask_blur": 4}),
        )
        .to_job_body(true)
        .unwrap();
        assert_eq!(body["operation"], json!("image_inpaint"));
        assert_eq!(body["image"], json!("AAAA"));
        assert_eq!(body["strength"], json!(0.5));
        assert_eq!(body["resize_mode"], json!("fit"));
        assert_eq!(body["mask_blur"], json!(4));
        let e = req(json!({"init_images": ["A"], "resize_mode": 7}))
            .to_job_body(true)
            .unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("resize_mode"));
        let e = req(json!({"prompt": "p"})).to_job_body(true).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("init_images"));
    }

    #[test]
    fn a_schedule_the_sampler_lacks_is_refused_naming_scheduler() {
        let e = req(json!({"sampler_name": "Euler a", "scheduler": "Karras"}))
            .scheduler_spelling()
            .unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("scheduler"));
        let ok = req(json!({"sampler_name": "Euler a", "scheduler": "Automatic"}));
        assert_eq!(ok.scheduler_spelling().unwrap().as_deref(), Some("Euler a"));
    }

    #[test]
    fn ignored_settings_are_listed() {
        let r =
            req(json!({"override_settings": {"CLIP_stop_at_last_layers": 2}, "enable_hr": true}));
        let w = r.ignored();
        assert!(w[0].contains("CLIP_stop_at_last_layers"), "{w:?}");
        assert!(w.iter().any(|s| s.starts_with("enable_hr")), "{w:?}");
    }
}
