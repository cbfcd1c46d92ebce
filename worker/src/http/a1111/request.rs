//! A1111's `txt2img` / `img2img` request and its mapping onto our contract's
//! job body. Fields we use are mapped; the rest are accepted (A1111's own
//! server ignores unknown fields too) and those that would change the picture
//! are named in the answer's `info.warnings` ([`SdRequest::ignored`]).

use base64::Engine as _;
use sd_worker_sdk::{ApiError, ErrorCode, Rng, SchedulerName, SCHEDULERS};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::numbers;
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
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub steps: Option<u32>,
    /// Our `guidance_scale`.
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub cfg_scale: Option<f64>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub width: Option<u32>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub height: Option<u32>,
    /// -1 (or any negative): random (read as absent). Image `i` uses `seed + i`, as in A1111.
    #[serde(default, deserialize_with = "numbers::opt_seed")]
    pub seed: Option<u64>,
    /// Images per job: `batch_size * n_iter` images in one job (our `num_images`).
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub batch_size: Option<u32>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
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
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub denoising_strength: Option<f64>,
    /// img2img: base64 images; the first is used.
    #[serde(default)]
    pub init_images: Option<Vec<String>>,
    /// img2img: white repaints (black with `inpainting_mask_invert: 1`).
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub mask_blur: Option<u32>,
    /// 1: repaint the mask's black pixels instead of its white ones.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub inpainting_mask_invert: Option<u32>,
    /// 0 just resize (stretch), 1 crop and resize (crop), 2 resize and fill (fit), 3 latent upscale (stretch).
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub resize_mode: Option<u32>,
    /// Only 1 (`original`) is what this worker does; other values run as 1, with a warning.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub inpainting_fill: Option<u32>,
    /// `randn_source` ("GPU", "CPU", "NV": A1111's noise source) chooses our
    /// `rng` ([`SdRequest::rng`]); other keys are ignored and listed in
    /// `info.warnings`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub override_settings: Option<Map<String, Value>>,
    /// The scripts A1111 runs on every job, by name: `ControlNet` (any case)
    /// `{"args": [unit, ...]}` holds the ControlNet extension's units, mapped
    /// onto our `controlnets` ([`super::controlnet::Plan`]); other scripts
    /// are ignored and listed in `info.warnings`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub alwayson_scripts: Option<Map<String, Value>>,
    /// txt2img with `enable_hr`: the hires fix's factor (2 when absent),
    /// unless `hr_resize_x`/`hr_resize_y` give the size.
    #[serde(default, deserialize_with = "numbers::opt_f64")]
    pub hr_scale: Option<f64>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub hr_resize_x: Option<u32>,
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub hr_resize_y: Option<u32>,
    /// "Latent" (the default), "Latent (nearest)", "Latent (bicubic)",
    /// "Lanczos", "Nearest", or an upscaler of `GET /sdapi/v1/upscalers`.
    #[serde(default)]
    pub hr_upscaler: Option<String>,
    /// 0 or absent: the first pass's `steps`.
    #[serde(default, deserialize_with = "numbers::opt_u32")]
    pub hr_second_pass_steps: Option<u32>,
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

/// Reads an A1111 JSON object body as `T` (whose numeric fields use
/// [`numbers`]), and the object as sent. A field of the wrong type is a 422
/// naming it; a body that is not a JSON object, a 400.
pub fn parse_fields<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, Map<String, Value>), HttpError> {
    let raw: Map<String, Value> = parse_json(bytes)?;
    // From the parsed value, so that messages carry no byte position.
    let value = Value::Object(raw);
    let req: T = serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        let message = if inner.starts_with(numbers::MUST) {
            format!("`{field}` {inner}")
        } else {
            format!("`{field}`: {inner}")
        };
        refuse(&field, message)
    })?;
    let raw = match value {
        Value::Object(raw) => raw,
        _ => Map::new(),
    };
    Ok((req, raw))
}

impl SdRequest {
    /// Reads the body: a JSON object whose known fields have A1111's types,
    /// numbers read as pydantic's lax mode does ([`numbers`]: `20.0` and
    /// `"20"` for `steps`). A field of the wrong type is a 422 naming it.
    pub fn parse(bytes: &[u8]) -> Result<Self, HttpError> {
        let (mut req, raw): (SdRequest, _) = parse_fields(bytes)?;
        req.raw = raw;
        Ok(req)
    }

    /// `(batch_size, n_iter)`, 1 each when absent.
    pub fn batch(&self) -> (u32, u32) {
        (self.batch_size.unwrap_or(1), self.n_iter.unwrap_or(1))
    }

    /// Our contract's job body. `img2img` needs `init_images`; with a `mask`
    /// the job is `image_inpaint`, else `image_transform`. `available` and
    /// `default` are the loaded model's schedulers ([`Self::resolve_scheduler`]).
    pub fn to_job_body(
        &self,
        img2img: bool,
        available: &[SchedulerName],
        default: SchedulerName,
    ) -> Result<Map<String, Value>, HttpError> {
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
        put(
            "scheduler",
            json!(self
                .resolve_scheduler(available, default)?
                .map(SchedulerName::name)),
        );
        put("rng", json!(self.rng()?.name()));
        if !img2img {
            body.insert("operation".into(), json!("image_generation"));
            if self.flag("enable_hr") {
                body.insert("hires".into(), self.hires());
            }
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

    /// The scheduler A1111's pair `sampler_name` (or `sampler_index`) +
    /// `scheduler` names on a model with the schedulers `available` and the
    /// default `default`. `sampler_name` takes any spelling of the contract's
    /// table ("Euler a", "DPM++ 2M Karras", `euler_a`); without it the sampler
    /// is the model's default, as A1111 runs its own default sampler. A
    /// `scheduler` other than "Automatic" (A1111 1.9's schedule type,
    /// "Karras") picks the table's row with that sampler and schedule:
    /// "Karras" on "DPM++ 2M" is `dpmpp_2m_karras`. `None`: both absent, the
    /// model's default runs.
    ///
    /// # Errors
    /// A 422 naming `sampler_name` for a sampler this model lacks (listing
    /// A1111's names, as `GET /sdapi/v1/samplers`), or naming `scheduler`
    /// for a schedule its sampler lacks here.
    pub fn resolve_scheduler(
        &self,
        available: &[SchedulerName],
        default: SchedulerName,
    ) -> Result<Option<SchedulerName>, HttpError> {
        let sampler = self
            .sampler_name
            .as_deref()
            .or(self.sampler_index.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let schedule = self
            .scheduler
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("automatic"));
        let base = match sampler {
            None if schedule.is_none() => return Ok(None),
            None => default,
            Some(name) => {
                let mut named = SchedulerName::candidates(name).peekable();
                let known = named.peek().is_some();
                named.find(|s| available.contains(s)).ok_or_else(|| {
                    let what = if known {
                        "is not available for this model"
                    } else {
                        "is unknown"
                    };
                    refuse(
                        "sampler_name",
                        format!(
                            "sampler `{name}` {what}; one of: {}",
                            a1111_names(available)
                        ),
                    )
                })?
            }
        };
        let Some(schedule) = schedule else {
            return Ok(Some(base));
        };
        let sampler_name = base.spec().a1111_sampler;
        SCHEDULERS
            .iter()
            .find(|row| {
                available.contains(&row.name)
                    && row.a1111_sampler == sampler_name
                    && row
                        .a1111_schedule
                        .is_some_and(|s| s.eq_ignore_ascii_case(schedule))
            })
            .map(|row| Some(row.name))
            .ok_or_else(|| {
                let whose = if sampler.is_none() {
                    " (the model's default, `sampler_name` being absent)"
                } else {
                    ""
                };
                refuse(
                    "scheduler",
                    format!(
                        "sampler `{sampler_name}`{whose} with schedule `{schedule}` is not \
                         available here; see GET /sdapi/v1/samplers and /sdapi/v1/schedulers"
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

    /// Our `hires` for txt2img's `enable_hr` fields: `hr_resize_x`/`_y`
    /// when either is above 0 (A1111 then ignores `hr_scale`), else
    /// `hr_scale`; `denoising_strength` is the second pass's.
    fn hires(&self) -> Value {
        let mut h = Map::new();
        let resize = [("width", self.hr_resize_x), ("height", self.hr_resize_y)];
        if resize.iter().any(|(_, v)| v.is_some_and(|v| v > 0)) {
            for (k, v) in resize {
                if let Some(v) = v.filter(|v| *v > 0) {
                    h.insert(k.into(), json!(v));
                }
            }
        } else if let Some(scale) = self.hr_scale {
            h.insert("scale".into(), json!(scale));
        }
        if let Some(u) = self.hr_upscaler.as_ref().filter(|u| !u.trim().is_empty()) {
            h.insert("upscaler".into(), json!(u));
        }
        if let Some(steps) = self.hr_second_pass_steps {
            h.insert("steps".into(), json!(steps));
        }
        if let Some(s) = self.denoising_strength {
            h.insert("denoising_strength".into(), json!(s));
        }
        Value::Object(h)
    }

    /// Whether the body's `key` is on, as pydantic reads a bool from any
    /// JSON: "0", "false", "off", 0, empty objects and lists are off.
    fn flag(&self, key: &str) -> bool {
        match self.raw.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                let s = s.trim().to_ascii_lowercase();
                !(s.is_empty()
                    || ["false", "no", "off", "f", "n"].contains(&s.as_str())
                    || s.parse::<f64>().is_ok_and(|x| x == 0.0))
            }
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
            _ => false,
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
        let on = |k: &str| self.flag(k);
        // The hires pass with another sampler, prompt or checkpoint.
        if on("enable_hr") {
            for key in [
                "hr_sampler_name",
                "hr_scheduler",
                "hr_prompt",
                "hr_negative_prompt",
                "hr_checkpoint_name",
            ] {
                let set = match self.raw.get(key) {
                    Some(Value::String(s)) => {
                        let s = s.trim();
                        !s.is_empty()
                            && !s.eq_ignore_ascii_case("use same sampler")
                            && !s.eq_ignore_ascii_case("use same scheduler")
                            && !s.eq_ignore_ascii_case("use same checkpoint")
                    }
                    _ => false,
                };
                if set {
                    out.push(format!(
                        "{key} ignored: the hires pass uses the first pass's"
                    ));
                }
            }
        }
        // A1111 reads `inpaint_full_res` ("only masked") only when inpainting.
        let masked = self.mask.is_some();
        for key in [
            "restore_faces",
            "tiling",
            "script_name",
            "styles",
            "subseed_strength",
            "inpaint_full_res",
            "refiner_checkpoint",
        ] {
            if on(key) && (masked || key != "inpaint_full_res") {
                out.push(format!("{key} ignored: not supported by this worker"));
            }
        }
        out
    }
}

/// The A1111 names of `schedulers`, as `GET /sdapi/v1/samplers` lists them.
fn a1111_names(schedulers: &[SchedulerName]) -> String {
    let names: Vec<&str> = schedulers.iter().map(|s| s.spec().a1111).collect();
    names.join(", ")
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

    /// A diffusion model's schedulers.
    fn diffusion() -> Vec<SchedulerName> {
        SchedulerName::ALL
            .into_iter()
            .filter(|s| !s.is_flow_matching())
            .collect()
    }

    /// The job body on a diffusion model whose default is Euler.
    fn job(r: SdRequest, img2img: bool) -> Result<Map<String, Value>, HttpError> {
        r.to_job_body(img2img, &diffusion(), SchedulerName::Euler)
    }

    #[test]
    fn a1111_fields_become_the_contract_fields() {
        let r = req(
            json!({"prompt": "p", "cfg_scale": 6.5, "seed": -1, "batch_size": 2,
            "n_iter": 3, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "steps": 4}),
        );
        let body = job(r, false).unwrap();
        assert_eq!(body["guidance_scale"], json!(6.5));
        assert_eq!(body["num_images"], json!(6));
        assert_eq!(body.get("seed"), None, "-1: random, as absent");
        assert_eq!(body["scheduler"], json!("dpmpp_2m_karras"));
        assert_eq!(body["operation"], json!("image_generation"));
        assert_eq!(body["rng"], json!("nv"));
    }

    #[test]
    fn randn_source_chooses_the_rng_as_a1111s_setting_does() {
        let rng = |source: Value| {
            job(
                req(json!({"override_settings": {"randn_source": source, "CLIP_stop_at_last_layers": 2}})),
                false,
            )
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
        let r = req(
            json!({"prompt": "p", "init_images": ["AAAA", "BBBB"], "mask": "CCCC",
            "denoising_strength": 0.5, "resize_mode": 2, "mask_blur": 4}),
        );
        let body = job(r, true).unwrap();
        assert_eq!(body["operation"], json!("image_inpaint"));
        assert_eq!(body["image"], json!("AAAA"));
        assert_eq!(body["strength"], json!(0.5));
        assert_eq!(body["resize_mode"], json!("fit"));
        assert_eq!(body["mask_blur"], json!(4));
        let e = job(req(json!({"init_images": ["A"], "resize_mode": 7})), true).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("resize_mode"));
        let e = job(req(json!({"prompt": "p"})), true).unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("init_images"));
    }

    #[test]
    fn a_schedule_the_sampler_lacks_is_refused_naming_scheduler() {
        let all = diffusion();
        let resolve = |v: Value, default| req(v).resolve_scheduler(&all, default);
        let e = resolve(
            json!({"sampler_name": "Euler a", "scheduler": "Karras"}),
            SchedulerName::Euler,
        )
        .unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("scheduler"));
        let ok = resolve(
            json!({"sampler_name": "Euler a", "scheduler": "Automatic"}),
            SchedulerName::Euler,
        );
        assert_eq!(ok.unwrap(), Some(SchedulerName::EulerAncestral));
    }

    #[test]
    fn a_schedule_without_a_sampler_applies_to_the_models_default_sampler() {
        let all = diffusion();
        let resolve = |v: Value, default| req(v).resolve_scheduler(&all, default);
        let karras = json!({"prompt": "x", "scheduler": "Karras"});
        assert_eq!(
            resolve(karras.clone(), SchedulerName::DpmPp2m).unwrap(),
            Some(SchedulerName::DpmPp2mKarras)
        );
        // Already Karras: the same.
        assert_eq!(
            resolve(karras.clone(), SchedulerName::DpmPp2mKarras).unwrap(),
            Some(SchedulerName::DpmPp2mKarras)
        );
        let automatic = json!({"prompt": "x", "scheduler": "Automatic"});
        assert_eq!(resolve(automatic, SchedulerName::DpmPp2m).unwrap(), None);
        assert_eq!(resolve(json!({}), SchedulerName::DpmPp2m).unwrap(), None);
        for bad in ["Karras", "Exponential", "Euler a"] {
            let e = resolve(json!({ "scheduler": bad }), SchedulerName::Euler).unwrap_err();
            assert_eq!(e.error.field.as_deref(), Some("scheduler"), "{bad}");
            assert!(e.error.message.contains("`Euler`"), "{}", e.error.message);
        }
        // Only the model's own schedulers count.
        let e = req(json!({"scheduler": "Karras"}))
            .resolve_scheduler(&[SchedulerName::DpmPp2m], SchedulerName::DpmPp2m)
            .unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("scheduler"));
    }

    #[test]
    fn an_unknown_sampler_is_refused_listing_a1111s_names() {
        let e = req(json!({"sampler_name": "Heun"}))
            .resolve_scheduler(&diffusion(), SchedulerName::Euler)
            .unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("sampler_name"));
        let m = e.error.message;
        assert!(m.contains("Euler a, DPM++ 2M, DPM++ 2M Karras"), "{m}");
        assert!(!m.contains("euler_a") && !m.contains("flow_euler"), "{m}");
        // Known, but not on this model's family.
        let e = req(json!({"sampler_name": "flow_euler"}))
            .resolve_scheduler(&diffusion(), SchedulerName::Euler)
            .unwrap_err();
        assert_eq!(e.error.field.as_deref(), Some("sampler_name"));
    }

    #[test]
    fn enable_hr_becomes_hires() {
        let body = |v: Value| {
            req(v)
                .to_job_body(false, &diffusion(), SchedulerName::Euler)
                .unwrap()
        };
        let b = body(
            json!({"enable_hr": true, "hr_scale": 1.5, "hr_upscaler": "Latent (nearest)",
                            "hr_second_pass_steps": 4, "denoising_strength": 0.55}),
        );
        assert_eq!(
            b["hires"],
            json!({"scale": 1.5, "upscaler": "Latent (nearest)", "steps": 4, "denoising_strength": 0.55})
        );
        // A size wins over the scale, as in A1111; off means no hires.
        let b =
            body(json!({"enable_hr": "true", "hr_scale": 2, "hr_resize_x": 128, "hr_resize_y": 0}));
        assert_eq!(b["hires"], json!({"width": 128}));
        assert!(body(json!({"enable_hr": false, "hr_scale": 2}))
            .get("hires")
            .is_none());
    }

    #[test]
    fn ignored_settings_are_listed() {
        let r = req(json!({"override_settings": {"CLIP_stop_at_last_layers": 2},
                            "enable_hr": true, "hr_sampler_name": "Euler", "hr_prompt": ""}));
        let w = r.ignored();
        assert!(w[0].contains("CLIP_stop_at_last_layers"), "{w:?}");
        // The hires fix runs; a second sampler for it does not.
        assert!(w.iter().any(|s| s.starts_with("hr_sampler_name")), "{w:?}");
        assert_eq!(w.len(), 2, "{w:?}");
        let off = req(json!({"enable_hr": "false", "subseed_strength": "0", "tiling": 0.0}));
        assert!(off.ignored().is_empty(), "{:?}", off.ignored());
        let on = req(json!({"subseed_strength": " 0.5 "}));
        assert_eq!(on.ignored().len(), 1, "{:?}", on.ignored());
        // "Only masked" means nothing without a mask (webuiapi sends it by default).
        assert!(req(json!({"inpaint_full_res": 1})).ignored().is_empty());
        let masked = req(json!({"inpaint_full_res": 1, "mask": "AAAA"}));
        assert_eq!(masked.ignored().len(), 1, "{:?}", masked.ignored());
    }
}
