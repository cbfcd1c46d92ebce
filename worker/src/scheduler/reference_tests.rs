//! Every scheduler against diffusers, step by step. The reference values in
//! `tests/reference/scheduler_reference.json` are diffusers' schedulers run
//! through whole sampling loops on fixed inputs (how to recompute them, and the
//! made-up model and noise: `scheduler_reference.py` beside it): the
//! timesteps, `init_noise_sigma` and the samples after the first steps, the
//! middle one and the last, for linspace, leading and trailing spacing with
//! 7, 13 and 30 steps and steps_offset 0 and 1, plus v-prediction, Karras
//! sigmas, LCM and flow Euler. Each step is compared to 1e-5 of the sample's
//! largest magnitude (diffusers computes in float32).

use std::collections::BTreeMap;

use candle_core::{Device, Result as CandleResult, Tensor};
use serde::Deserialize;

use super::test_util::values;
use super::{build, NoiseSource, SchedulerConfig, SchedulerKind};

#[derive(Deserialize)]
struct Case {
    scheduler: String,
    prediction_type: String,
    timestep_spacing: Option<String>,
    steps_offset: usize,
    steps: usize,
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
    /// Step index -> the sample after that step.
    samples: BTreeMap<String, Vec<f64>>,
}

#[derive(Deserialize)]
struct Reference {
    sd15_config: serde_json::Value,
    sd3_config: serde_json::Value,
    cases: Vec<Case>,
}

/// Elements per sample, shape (1, 2, 2, 2) as in the script.
const N: usize = 8;
const TOLERANCE: f64 = 1e-5;

/// The script's `model(x_in, t)`.
fn model(x_in: &Tensor, t: f64) -> Tensor {
    let c = 0.6 + 0.3 * (t / 170.0).cos();
    let d = 0.4 * (t / 90.0 + 1.0).sin();
    let out: Vec<f32> = values(x_in)
        .iter()
        .enumerate()
        .map(|(k, x)| (x * c + (1.3 * k as f64 + 0.2).cos() * d) as f32)
        .collect();
    Tensor::from_vec(out, (1, 2, 2, 2), &Device::Cpu).unwrap()
}

/// The script's patched `randn_tensor`: a fixed function of the step index.
struct StepNoise {
    step: usize,
}

impl NoiseSource for StepNoise {
    fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor> {
        let v: Vec<f32> = (0..like.elem_count())
            .map(|k| (0.7 * k as f64 + 1.9 * self.step as f64 + 0.3).cos() as f32)
            .collect();
        Tensor::from_vec(v, like.shape(), like.device())
    }
}

fn config(reference: &Reference, case: &Case) -> SchedulerConfig {
    let mut json = if case.scheduler == "flow_euler" {
        reference.sd3_config.clone()
    } else {
        reference.sd15_config.clone()
    };
    let obj = json.as_object_mut().unwrap();
    if case.scheduler != "flow_euler" {
        obj.insert(
            "prediction_type".into(),
            case.prediction_type.clone().into(),
        );
        obj.insert("steps_offset".into(), case.steps_offset.into());
    }
    if let Some(spacing) = &case.timestep_spacing {
        obj.insert("timestep_spacing".into(), spacing.clone().into());
    }
    SchedulerConfig::from_json_str(&json.to_string()).unwrap()
}

/// Largest |got - want| over the vector, relative to its largest |want|.
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-12);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() / scale))
}

/// Runs one case; returns the worst relative error of its samples, or the
/// first way it differs structurally (timesteps, init_noise_sigma).
fn run_case(reference: &Reference, case: &Case) -> Result<f64, String> {
    let kind = SchedulerKind::from_name(&case.scheduler).unwrap();
    let mut s = build(kind, &config(reference, case), case.steps).unwrap();
    let ts = s.timesteps().to_vec();
    let same_t = ts.len() == case.timesteps.len()
        && ts
            .iter()
            .zip(&case.timesteps)
            .all(|(a, b)| (a - b).abs() <= TOLERANCE * b.abs().max(1.0));
    if !same_t {
        return Err(format!("timesteps {ts:?}, diffusers {:?}", case.timesteps));
    }
    let sigma = s.init_noise_sigma();
    if (sigma - case.init_noise_sigma).abs() > TOLERANCE * case.init_noise_sigma {
        return Err(format!(
            "init_noise_sigma {sigma}, diffusers {}",
            case.init_noise_sigma
        ));
    }
    let x0: Vec<f32> = (0..N)
        .map(|k| (1.1 * (0.9 * k as f64 + 0.5).sin() * sigma) as f32)
        .collect();
    let mut x = Tensor::from_vec(x0, (1, 2, 2, 2), &Device::Cpu).unwrap();
    let mut worst = 0.0f64;
    for (i, &t) in ts.iter().enumerate() {
        let out = model(&s.scale_model_input(&x, i).unwrap(), t);
        x = s.step(&out, i, &x, &mut StepNoise { step: i }).unwrap();
        if let Some(want) = case.samples.get(&i.to_string()) {
            let err = relative_error(&values(&x), want);
            if err.is_nan() || err > TOLERANCE {
                return Err(format!(
                    "step {i} (t = {t}): relative error {err:.2e}: ours {:?}, diffusers {want:?}",
                    values(&x)
                ));
            }
            worst = worst.max(err);
        }
    }
    Ok(worst)
}

#[test]
fn every_scheduler_follows_diffusers_step_by_step_for_every_spacing() {
    let reference: Reference = serde_json::from_str(include_str!(
        "../../tests/reference/scheduler_reference.json"
    ))
    .unwrap();
    assert!(reference.cases.len() > 100);
    let mut failures = Vec::new();
    // Worst relative error per scheduler, printed for the record (--nocapture).
    let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
    for case in &reference.cases {
        let what = format!(
            "{} {} {:?} steps_offset {} {} steps",
            case.scheduler,
            case.prediction_type,
            case.timestep_spacing,
            case.steps_offset,
            case.steps
        );
        match run_case(&reference, case) {
            Ok(err) => {
                let w = worst.entry(&case.scheduler).or_default();
                *w = w.max(err);
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    for (kind, err) in &worst {
        println!("{kind}: worst relative difference {err:.2e}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from diffusers:\n{}",
        failures.len(),
        reference.cases.len(),
        failures.join("\n")
    );
}
