//! A1111's ControlNet extension (Mikubill/sd-webui-controlnet) as clients
//! speak it: the units of `alwayson_scripts.controlnet.args` (the script's
//! name matched case-insensitively, as A1111 does: `"ControlNet"` or
//! `"controlnet"`) become our contract's `controlnets` units ([`Plan`]).
//! The vocabulary (module names, thresholds, resize and control modes) is the
//! extension's `internal_controlnet/args.py` `ControlNetUnit` and its
//! preprocessors' sliders; [`MODULES`] is the part this worker runs.

use sd_worker_sdk::control::{DEFAULT_CANNY_HIGH, DEFAULT_CANNY_LOW};
use sd_worker_sdk::{ApiError, ErrorCode, PreprocessorName};
use serde::de::IntoDeserializer;
use serde_json::{json, Map, Value};

use super::numbers;
use super::request::refuse;
use crate::http::error::HttpError;

/// The extension's modules (preprocessors) this worker runs:
/// `(name, label, ours)`. `GET /controlnet/module_list` lists the names (the
/// labels with `alias_names=true`) in the extension's order: `none`, then by
/// its sorting priority.
pub const MODULES: [(&str, &str, PreprocessorName); 4] = [
    ("none", "none", PreprocessorName::None),
    ("canny", "canny", PreprocessorName::Canny),
    (
        "invert",
        "invert (from white bg & black line)",
        PreprocessorName::Invert,
    ),
    (
        "depth_anything_v2",
        "depth_anything_v2",
        PreprocessorName::Depth,
    ),
];

/// The extension's canny sliders accept 1..=255; another value (its `-1`
/// "default") runs canny's default.
const CANNY_RANGE: std::ops::RangeInclusive<f64> = 1.0..=255.0;

/// The extension's `processor_res` slider range and default (`-1` and
/// values outside the range run at 512).
const RES_RANGE: std::ops::RangeInclusive<f64> = 64.0..=2048.0;
const DEFAULT_RES: f64 = 512.0;

/// The modules `have` (this worker's preprocessors) allows, by name or label.
pub fn module_names(have: &[PreprocessorName], labels: bool) -> Vec<&'static str> {
    MODULES
        .iter()
        .filter(|(_, _, ours)| have.contains(ours))
        .map(|(name, label, _)| if labels { *label } else { *name })
        .collect()
}

/// Our preprocessor for the extension's module `name` (its name or label,
/// case and surrounding spaces ignored; absent or empty is `none`), with a
/// warning when the name means something else in the extension (`depth` is
/// MiDaS there). `None`: a module this worker does not run.
pub fn module_of(
    name: Option<&str>,
    have: &[PreprocessorName],
) -> Option<(PreprocessorName, Option<String>)> {
    let name = name.map(str::trim).unwrap_or("");
    if name.is_empty() {
        return Some((PreprocessorName::None, None));
    }
    if name.eq_ignore_ascii_case("depth") && have.contains(&PreprocessorName::Depth) {
        return Some((
            PreprocessorName::Depth,
            Some(
                "module `depth` is MiDaS in A1111's extension; this worker runs Depth Anything V2 \
                 (`depth_anything_v2`)"
                    .into(),
            ),
        ));
    }
    MODULES
        .iter()
        .find(|(n, l, ours)| {
            have.contains(ours) && (n.eq_ignore_ascii_case(name) || l.eq_ignore_ascii_case(name))
        })
        .map(|(_, _, ours)| (*ours, None))
}

/// Canny's `(low, high)` from the extension's `threshold_a`/`threshold_b`
/// (absent: `-1`) as the extension runs them: each outside 1..=255 is its
/// default (100, 200), fractions are truncated (`int(slider)`), and a low
/// above the high is swapped (OpenCV's `Canny` swaps them). A warning for
/// each value given but out of range.
pub fn canny_thresholds(a: Option<f64>, b: Option<f64>, at: &str) -> (u32, u32, Vec<String>) {
    let mut warnings = Vec::new();
    let mut one = |v: Option<f64>, default: u32, name: &str| match v {
        Some(x) if CANNY_RANGE.contains(&x) => x as u32,
        Some(x) if x != -1.0 => {
            warnings.push(format!(
                "{at}{name} {x} is outside canny's 1..255: {default} used"
            ));
            default
        }
        _ => default,
    };
    let low = one(a, DEFAULT_CANNY_LOW, "threshold_a");
    let high = one(b, DEFAULT_CANNY_HIGH, "threshold_b");
    (low.min(high), low.max(high), warnings)
}

/// The resolution the extension runs a resizing preprocessor at.
fn processor_res(res: Option<f64>) -> f64 {
    res.filter(|r| RES_RANGE.contains(r))
        .map_or(DEFAULT_RES, f64::trunc)
}

/// A unit whose map this worker computes at the output size where the
/// extension would compute it at `processor_res`.
#[derive(Debug, Clone)]
struct Sized {
    origin: String,
    res: f64,
}

/// The ControlNet units of an A1111 request, mapped onto ours.
#[derive(Debug, Default)]
pub struct Plan {
    /// Our units (contract field names), one per enabled A1111 unit with a model.
    units: Vec<Value>,
    /// The A1111 field each of our units came from: `alwayson_scripts.ControlNet.args[2]`.
    origins: Vec<String>,
    /// img2img units without an image of their own: they take `init_images[0]`, as A1111 does.
    from_init: Vec<bool>,
    /// Our `resize_mode` for text to image (the first unit's).
    resize_mode: Option<&'static str>,
    /// What was sent and would change the picture but is not applied.
    warnings: Vec<String>,
    sized: Vec<Sized>,
}

impl Plan {
    /// Reads `alwayson_scripts` (the scripts A1111 runs on every job).
    /// `controlnets` are the names this worker offers (`GET /v1/info`),
    /// `have` its preprocessors, `job_resize` img2img's own `resize_mode`
    /// (A1111's 0..3; `None` for txt2img).
    ///
    /// # Errors
    /// A 422 naming the A1111 field (`alwayson_scripts.ControlNet.args[0].module`)
    /// for a value that cannot be read, a module this worker lacks, or a
    /// txt2img unit without an image.
    pub fn read(
        scripts: Option<&Map<String, Value>>,
        img2img: Option<u32>,
        controlnets: &[String],
        have: &[PreprocessorName],
    ) -> Result<Plan, HttpError> {
        let mut plan = Plan::default();
        let Some(scripts) = scripts else {
            return Ok(plan);
        };
        for (key, script) in scripts {
            if !key.eq_ignore_ascii_case("controlnet") {
                if !is_empty(script) {
                    plan.warnings.push(format!(
                        "alwayson_scripts.{key} ignored: not supported by this worker"
                    ));
                }
                continue;
            }
            let at = format!("alwayson_scripts.{key}.args");
            let args = match script {
                Value::Null => continue,
                Value::Object(m) => match m.get("args") {
                    None | Some(Value::Null) => continue,
                    Some(Value::Array(args)) => args,
                    Some(_) => return Err(refuse(&at, format!("`{at}` must be a list of units"))),
                },
                _ => {
                    return Err(refuse(
                        &format!("alwayson_scripts.{key}"),
                        format!("`alwayson_scripts.{key}` must be an object with `args`"),
                    ))
                }
            };
            for (i, arg) in args.iter().enumerate() {
                // As the extension: only dicts are units (other scripts' values are skipped).
                if let Value::Object(unit) = arg {
                    plan.unit(unit, &format!("{at}[{i}]"), img2img, controlnets, have)?;
                }
            }
        }
        Ok(plan)
    }

    fn unit(
        &mut self,
        u: &Map<String, Value>,
        origin: &str,
        img2img: Option<u32>,
        controlnets: &[String],
        have: &[PreprocessorName],
    ) -> Result<(), HttpError> {
        let field = |name: &str| format!("{origin}.{name}");
        if !lax_bool(u.get("enabled"), &field("enabled"))?.unwrap_or(true) {
            return Ok(());
        }
        let model = match u.get("model") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::String(s)) => strip_hash(s.trim()),
            Some(_) => {
                return Err(refuse(&field("model"), "`model` must be a string"));
            }
        };
        if model.is_empty() || model.eq_ignore_ascii_case("none") {
            return Ok(());
        }
        let model = controlnets
            .iter()
            .find(|n| n.as_str() == model)
            .or_else(|| controlnets.iter().find(|n| n.eq_ignore_ascii_case(model)))
            .map_or(model, String::as_str);
        let module = match u.get("module") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(refuse(&field("module"), "`module` must be a string")),
        };
        let (ours, warning) = module_of(module, have).ok_or_else(|| {
            refuse(
                &field("module"),
                format!(
                    "module `{}` is not available here; one of: {}",
                    module.unwrap_or_default(),
                    module_names(have, false).join(", ")
                ),
            )
        })?;
        if let Some(w) = warning {
            self.warnings.push(format!("{origin}: {w}"));
        }
        let mut unit = json!({ "model": model, "preprocessor": ours.as_str() });
        let num = |name: &str| lax_f64(u.get(name), &field(name));
        if let Some(w) = num("weight")? {
            unit["conditioning_scale"] = json!(w);
        }
        if let Some(s) = num("guidance_start")? {
            unit["guidance_start"] = json!(s);
        }
        // `guidance` is the extension's older name for `guidance_end`.
        if let Some(e) = num("guidance_end")?.or(num("guidance")?) {
            unit["guidance_end"] = json!(e);
        }
        let (a, b) = (num("threshold_a")?, num("threshold_b")?);
        // The extension's other modules here have no sliders: thresholds are ignored, as there.
        if ours == PreprocessorName::Canny {
            let (low, high, warnings) = canny_thresholds(a, b, &format!("{origin}: "));
            self.warnings.extend(warnings);
            unit["low_threshold"] = json!(low);
            unit["high_threshold"] = json!(high);
        }
        // Canny runs at `processor_res` in the extension (its `resize_image_with_pad`),
        // here at the output size; depth_anything_v2 has no resolution slider there.
        if ours == PreprocessorName::Canny
            && !lax_bool(u.get("pixel_perfect"), &field("pixel_perfect"))?.unwrap_or(false)
        {
            self.sized.push(Sized {
                origin: origin.to_string(),
                res: processor_res(num("processor_res")?),
            });
        }
        let mode = resize_mode(u.get("resize_mode"), &field("resize_mode"))?;
        self.resize(origin, mode, img2img);
        match control_mode(u.get("control_mode"), &field("control_mode"))? {
            0 => {}
            m => self.warnings.push(format!(
                "{origin}: control_mode `{}` ignored: runs as `Balanced`",
                CONTROL_MODES[m]
            )),
        }
        for (key, what) in [
            ("guess_mode", "guess_mode"),
            ("guessmode", "guess_mode"),
            ("advanced_weighting", "advanced_weighting"),
            ("effective_region_mask", "effective_region_mask"),
        ] {
            if u.get(key).is_some_and(|v| !is_off(v)) {
                self.warnings
                    .push(format!("{origin}: {what} ignored: not supported here"));
            }
        }
        let image = match u.get("image").filter(|v| !is_off(v)) {
            Some(v) => image_of(v, &field("image"))?,
            None => image_of(
                u.get("input_image").unwrap_or(&Value::Null),
                &field("input_image"),
            )?,
        };
        match (image, img2img) {
            (Some(image), _) => {
                unit["image"] = json!(image);
                self.from_init.push(false);
            }
            (None, Some(_)) => self.from_init.push(true),
            (None, None) => {
                return Err(ApiError::new(
                    ErrorCode::MissingField,
                    "a ControlNet unit needs an `image` (txt2img has no init image to take)",
                )
                .with_field(field("image"))
                .into())
            }
        }
        self.units.push(unit);
        self.origins.push(origin.to_string());
        Ok(())
    }

    /// One resize mode per job: txt2img takes the first unit's, img2img its
    /// own; a unit that differs is warned about.
    fn resize(&mut self, origin: &str, mode: usize, img2img: Option<u32>) {
        let (job, whose) = match (img2img, self.resize_mode) {
            (Some(m), _) => (
                match m {
                    1 => 1,
                    2 => 2,
                    _ => 0,
                },
                "img2img's `resize_mode`",
            ),
            (None, None) => {
                self.resize_mode = Some(OURS[mode]);
                return;
            }
            (None, Some(first)) => (
                OURS.iter().position(|o| *o == first).unwrap_or(0),
                "the first unit's",
            ),
        };
        if mode != job {
            self.warnings.push(format!(
                "{origin}: resize_mode `{}` ignored: one resize mode per job here, {whose} (`{}`) is used",
                RESIZE_MODES[mode], RESIZE_MODES[job]
            ));
        }
    }

    /// Whether any unit applies.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Writes our units into the job body (and, for txt2img, its
    /// `resize_mode`); units without an image take the body's `image`.
    pub fn apply(&self, body: &mut Map<String, Value>) {
        if self.units.is_empty() {
            return;
        }
        let init = body.get("image").cloned();
        let units: Vec<Value> = self
            .units
            .iter()
            .zip(&self.from_init)
            .map(|(u, from_init)| {
                let mut u = u.clone();
                if *from_init {
                    u["image"] = init.clone().unwrap_or(Value::Null);
                }
                u
            })
            .collect();
        body.insert("controlnets".into(), Value::Array(units));
        if let (Some(mode), false) = (self.resize_mode, body.contains_key("image")) {
            body.insert("resize_mode".into(), json!(mode));
        }
    }

    /// A refusal of our validation about `controlnets[i].x`, with the field
    /// named as the A1111 request has it (`alwayson_scripts.ControlNet.args[2].weight`);
    /// other refusals come back as `Err`.
    pub fn rename(&self, mut e: HttpError) -> Result<HttpError, HttpError> {
        let Some(field) = e.error.field.as_deref() else {
            return Err(e);
        };
        let Some(rest) = field.strip_prefix("controlnets") else {
            return Err(e);
        };
        let renamed = match rest.strip_prefix('[').and_then(|r| r.split_once("].")) {
            Some((i, name)) => {
                let Some(origin) = i.parse::<usize>().ok().and_then(|i| self.origins.get(i)) else {
                    return Err(e);
                };
                let theirs = match name {
                    "conditioning_scale" => "weight",
                    "preprocessor" => "module",
                    "low_threshold" | "threshold" => "threshold_a",
                    "high_threshold" => "threshold_b",
                    other => other,
                };
                format!("{origin}.{theirs}")
            }
            None => match self.origins.first().and_then(|o| o.rsplit_once('[')) {
                Some((args, _)) => args.to_string(),
                None => return Err(e),
            },
        };
        for (ours, theirs) in [
            ("`conditioning_scale`", "`weight`"),
            ("`preprocessor`", "`module`"),
            ("`low_threshold`", "`threshold_a`"),
            ("`high_threshold`", "`threshold_b`"),
        ] {
            e.error.message = e.error.message.replace(ours, theirs);
        }
        e.error.field = Some(renamed);
        Ok(e)
    }

    /// What was sent and is not applied, for `info.warnings`; `size` is the
    /// job's output size (where this worker computes canny and depth maps).
    pub fn warnings(&self, (width, height): (u32, u32)) -> Vec<String> {
        let mut out = self.warnings.clone();
        let side = f64::from(width.min(height));
        for s in &self.sized {
            if s.res != side {
                out.push(format!(
                    "{}: processor_res {} ignored: the canny map is computed at the output size \
                     ({width}x{height}), as with pixel_perfect",
                    s.origin, s.res
                ));
            }
        }
        out
    }
}

/// The extension's resize modes (its `ResizeMode` values, by their index)
/// and ours for each.
const RESIZE_MODES: [&str; 3] = ["Just Resize", "Crop and Resize", "Resize and Fill"];
const OURS: [&str; 3] = ["stretch", "crop", "fit"];
const CONTROL_MODES: [&str; 3] = [
    "Balanced",
    "My prompt is more important",
    "ControlNet is more important",
];

/// A unit's `resize_mode` as an index of [`RESIZE_MODES`]: its names, the
/// extension's older aliases, or 0..=3 (3, "Just Resize (Latent upscale)",
/// is Just Resize); absent: "Crop and Resize", the extension's default.
fn resize_mode(v: Option<&Value>, field: &str) -> Result<usize, HttpError> {
    let name = match v {
        None | Some(Value::Null) => return Ok(1),
        Some(Value::String(s)) => s.trim(),
        Some(_) => "",
    };
    let alias = match name {
        "Inner Fit (Scale to Fit)" | "Scale to Fit (Inner Fit)" => Some(1),
        "Outer Fit (Shrink to Fit)" | "Envelope (Outer Fit)" => Some(2),
        _ => RESIZE_MODES
            .iter()
            .position(|m| m.eq_ignore_ascii_case(name)),
    };
    if let Some(i) = alias {
        return Ok(i);
    }
    match lax_u32(v, field) {
        Ok(Some(n @ 0..=2)) => Ok(n as usize),
        Ok(Some(3)) => Ok(0),
        _ => Err(refuse(
            field,
            format!(
                "`resize_mode` must be one of {} (or 0 to 3), not {}",
                RESIZE_MODES.join(", "),
                v.cloned().unwrap_or_default()
            ),
        )),
    }
}

/// A unit's `control_mode` as an index of [`CONTROL_MODES`] (names or 0..=2;
/// absent: Balanced).
fn control_mode(v: Option<&Value>, field: &str) -> Result<usize, HttpError> {
    if let Some(Value::String(s)) = v {
        if let Some(i) = CONTROL_MODES
            .iter()
            .position(|m| m.eq_ignore_ascii_case(s.trim()))
        {
            return Ok(i);
        }
    }
    match lax_u32(v, field) {
        Ok(None) => Ok(0),
        Ok(Some(n @ 0..=2)) => Ok(n as usize),
        _ => Err(refuse(
            field,
            format!(
                "`control_mode` must be one of {} (or 0 to 2), not {}",
                CONTROL_MODES.join(", "),
                v.cloned().unwrap_or_default()
            ),
        )),
    }
}

/// The image of a unit's `image` as the extension reads it: a base64 string
/// (or `data:` URL), `{"image", "mask"}`, `[image, mask]` or a list of
/// `{"image", "mask"}` (the first is taken; masks are not used by the
/// modules here). `None` when empty.
fn image_of(v: &Value, field: &str) -> Result<Option<String>, HttpError> {
    let bad = || {
        refuse(
            field,
            format!("`{field}` must be a base64 image, {{\"image\", \"mask\"}} or [image, mask]"),
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(m) => image_of(m.get("image").unwrap_or(&Value::Null), field),
        Value::Array(a) => match a.first() {
            None => Err(bad()),
            Some(first) => image_of(first, field),
        },
        _ => Err(bad()),
    }
}

/// Whether a script's value holds nothing to run (`{"args": []}`, null).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether a value is absent-like: null, false, 0, "" or an empty list.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

/// A boolean as pydantic reads one: `true`/`false`, 0/1, and the strings
/// "true", "false", "yes", "no", "on", "off", "1", "0" (any case).
pub fn lax_bool(v: Option<&Value>, field: &str) -> Result<Option<bool>, HttpError> {
    let read = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "t" | "y" => Some(true),
            "false" | "no" | "off" | "0" | "f" | "n" => Some(false),
            _ => None,
        },
        Some(_) => None,
    };
    read.map(Some).ok_or_else(|| {
        refuse(
            field,
            format!(
                "`{field}` must be true or false, not {}",
                v.cloned().unwrap_or_default()
            ),
        )
    })
}

/// A number as the rest of the adapter reads one ([`numbers::opt_f64`]).
pub fn lax_f64(v: Option<&Value>, field: &str) -> Result<Option<f64>, HttpError> {
    let v = v.cloned().unwrap_or(Value::Null);
    numbers::opt_f64(v.into_deserializer())
        .map_err(|e: serde_json::Error| refuse(field, format!("`{field}` {e}")))
}

fn lax_u32(v: Option<&Value>, field: &str) -> Result<Option<u32>, HttpError> {
    let v = v.cloned().unwrap_or(Value::Null);
    numbers::opt_u32(v.into_deserializer())
        .map_err(|e: serde_json::Error| refuse(field, format!("`{field}` {e}")))
}

/// A model name as A1111 lists it, `name [hash]`, without ` [hash]`.
pub fn strip_hash(name: &str) -> &str {
    match name.strip_suffix(']').and_then(|n| n.rsplit_once(" [")) {
        Some((base, hash))
            if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base.trim_end()
        }
        _ => name,
    }
}

#[cfg(test)]
#[path = "controlnet_tests.rs"]
mod tests;
