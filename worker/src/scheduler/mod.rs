//! Noise schedulers, implemented from diffusers' definitions rather than taken
//! from candle_transformers, whose versions give NaN for `squaredcos_cap_v2`
//! (integer division) and fail DDIM with eta > 0 on f16 (f32 noise added to
//! f16 latents). Each job builds a fresh scheduler from the model's
//! `scheduler/scheduler_config.json` with [`build`].
//!
//! Layout: `config` (the scheduler_config.json keys), `betas` (training
//! schedule -> alphas_cumprod), `spacing` (which training timesteps an N-step
//! run visits), then one file per sampler (`dpmpp_2m` also holds the schedule
//! UniPC shares, `euler` the one Euler-a shares).
//! The interface mirrors diffusers' (`timesteps`, `init_noise_sigma`,
//! `scale_model_input`, `step`, `add_noise`) but takes the step *index*
//! rather than the timestep value, so no float equality search is needed.
//! Multistep samplers (DPM++ 2M, UniPC) remember earlier model outputs; they
//! start afresh whenever `step` is not called with the index after the last
//! one, which is how diffusers behaves when image to image begins mid-schedule.

pub mod betas;
mod config;
mod ddim;
mod ddpm;
mod dpmpp_2m;
mod euler;
mod euler_ancestral;
mod flow_euler;
mod lcm;
#[cfg(test)]
mod reference_tests;
pub mod spacing;
mod unipc;
#[cfg(test)]
mod x0_tests;

use anyhow::{bail, Result};
use candle_core::{DType, Result as CandleResult, Tensor};
use sd_worker_sdk::SchedulerName;

pub use config::SchedulerConfig;

/// Where stochastic schedulers get their noise. The pipeline implements this with
/// per-image seeded CPU RNGs, so results are reproducible. Returned tensor: same
/// shape, dtype and device as `like`, standard normal.
pub trait NoiseSource {
    fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor>;
}

/// The schedulers this build implements: one per [`SchedulerName`] of the
/// contract, whose table (`sd_worker_sdk::schedulers`) gives each its wire name,
/// label, AUTOMATIC1111 name and family. Variant docs say what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// DDIM, deterministic (eta 0).
    Ddim,
    /// DDPM (ancestral, stochastic).
    Ddpm,
    /// Euler (diffusers' EulerDiscreteScheduler).
    Euler,
    /// Euler ancestral.
    EulerAncestral,
    /// DPM-Solver++ (2M), multistep, second order.
    DpmPp2m,
    /// DPM++ 2M on Karras et al.'s sigmas (rho 7).
    DpmPp2mKarras,
    /// UniPC (bh2), second order, predictor-corrector.
    UniPc,
    /// Latent consistency models (LCM, LCM-LoRA), 1-8 steps.
    Lcm,
    /// Euler on a flow-matching model's velocity (SD 3).
    /// The only kind valid for flow-matching models, and invalid for the others.
    FlowEuler,
}

impl SchedulerKind {
    /// Every kind, in the contract's order (that of `/v1/info`).
    pub const ALL: [SchedulerKind; SchedulerName::COUNT] = {
        let mut all = [SchedulerKind::Ddim; SchedulerName::COUNT];
        let mut i = 0;
        while i < SchedulerName::COUNT {
            all[i] = Self::from_wire(SchedulerName::ALL[i]);
            i += 1;
        }
        all
    };

    /// The contract's name of this kind.
    pub const fn wire(self) -> SchedulerName {
        match self {
            SchedulerKind::Ddim => SchedulerName::Ddim,
            SchedulerKind::Ddpm => SchedulerName::Ddpm,
            SchedulerKind::Euler => SchedulerName::Euler,
            SchedulerKind::EulerAncestral => SchedulerName::EulerAncestral,
            SchedulerKind::DpmPp2m => SchedulerName::DpmPp2m,
            SchedulerKind::DpmPp2mKarras => SchedulerName::DpmPp2mKarras,
            SchedulerKind::UniPc => SchedulerName::UniPc,
            SchedulerKind::Lcm => SchedulerName::Lcm,
            SchedulerKind::FlowEuler => SchedulerName::FlowEuler,
        }
    }

    /// The kind implementing a contract name (every name has one).
    pub const fn from_wire(name: SchedulerName) -> Self {
        match name {
            SchedulerName::Ddim => SchedulerKind::Ddim,
            SchedulerName::Ddpm => SchedulerKind::Ddpm,
            SchedulerName::Euler => SchedulerKind::Euler,
            SchedulerName::EulerAncestral => SchedulerKind::EulerAncestral,
            SchedulerName::DpmPp2m => SchedulerKind::DpmPp2m,
            SchedulerName::DpmPp2mKarras => SchedulerKind::DpmPp2mKarras,
            SchedulerName::UniPc => SchedulerKind::UniPc,
            SchedulerName::Lcm => SchedulerKind::Lcm,
            SchedulerName::FlowEuler => SchedulerKind::FlowEuler,
        }
    }

    /// The wire name (request `scheduler` field, `/v1/info`).
    pub fn name(self) -> &'static str {
        self.wire().name()
    }

    /// The human label ("Euler ancestral").
    pub fn label(self) -> &'static str {
        self.wire().label()
    }

    /// The sampler's name as AUTOMATIC1111 writes it into image metadata
    /// (`Sampler: Euler a`); "Euler" for flow Euler, as A1111 and Forge write for SD 3.
    pub fn a1111_name(self) -> &'static str {
        self.wire().a1111_name()
    }

    /// The kinds `spelling` may name, case-insensitively: wire name, label,
    /// A1111 name or alias (see [`SchedulerName::candidates`]). "Euler" names
    /// both Euler and flow Euler; the model's family decides.
    pub fn candidates(spelling: &str) -> impl Iterator<Item = SchedulerKind> {
        SchedulerName::candidates(spelling).map(Self::from_wire)
    }

    /// The first of [`Self::candidates`] ("Euler": the diffusion Euler).
    pub fn from_name(spelling: &str) -> Option<Self> {
        Self::candidates(spelling).next()
    }

    /// Maps diffusers' `_class_name` to a kind; None for classes not implemented
    /// here (PNDMScheduler, LMSDiscreteScheduler, ...), which [`Self::default_for`]
    /// replaces with Euler.
    pub fn from_diffusers_class(class: &str) -> Option<Self> {
        match class {
            "DDIMScheduler" => Some(SchedulerKind::Ddim),
            "DDPMScheduler" => Some(SchedulerKind::Ddpm),
            "EulerDiscreteScheduler" => Some(SchedulerKind::Euler),
            "EulerAncestralDiscreteScheduler" => Some(SchedulerKind::EulerAncestral),
            "DPMSolverMultistepScheduler" => Some(SchedulerKind::DpmPp2m),
            "UniPCMultistepScheduler" => Some(SchedulerKind::UniPc),
            "LCMScheduler" => Some(SchedulerKind::Lcm),
            "FlowMatchEulerDiscreteScheduler" => Some(SchedulerKind::FlowEuler),
            _ => None,
        }
    }

    /// Whether this kind integrates a flow-matching velocity (x = (1 - s) x0 + s n)
    /// rather than a diffusion model's eps / v / x0 prediction.
    pub fn is_flow_matching(self) -> bool {
        self.wire().is_flow_matching()
    }

    /// The kinds valid for a model, in [`Self::ALL`]'s order: a flow-matching
    /// model takes only the flow schedulers, a diffusion model only the others.
    pub fn available(flow_matching: bool) -> Vec<SchedulerKind> {
        Self::ALL
            .into_iter()
            .filter(|k| k.is_flow_matching() == flow_matching)
            .collect()
    }

    /// The model's default: its config's class when implemented (a
    /// DPMSolverMultistepScheduler with `use_karras_sigmas` is DPM++ 2M Karras),
    /// else Euler for diffusion models (SD 1.5 ships PNDMScheduler; PNDM and LMS
    /// are not implemented) and flow Euler for flow-matching ones.
    pub fn default_for(config: &SchedulerConfig) -> Self {
        let fallback = if config.is_flow_matching() {
            SchedulerKind::FlowEuler
        } else {
            SchedulerKind::Euler
        };
        match config
            .class_name
            .as_deref()
            .and_then(Self::from_diffusers_class)
        {
            Some(SchedulerKind::DpmPp2m) if config.use_karras_sigmas => {
                SchedulerKind::DpmPp2mKarras
            }
            Some(kind) if kind.is_flow_matching() == config.is_flow_matching() => kind,
            _ => fallback,
        }
    }
}

/// What the UNet predicts (diffusers' `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    /// The added noise.
    Epsilon,
    /// v = sqrt(acp) eps - sqrt(1 - acp) x0 (Salimans & Ho, progressive distillation).
    V,
    /// The clean sample x0 itself.
    Sample,
}

impl Prediction {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            "sample" => Prediction::Sample,
            other => bail!(
                "scheduler config: unknown prediction_type `{other}` (expected epsilon, v_prediction or sample)"
            ),
        })
    }
}

pub trait Scheduler: Send {
    /// The timesteps fed to the UNet, in order (first = noisiest). Floats:
    /// Euler's linspace timesteps are fractional.
    fn timesteps(&self) -> &[f64];
    /// Multiply the initial standard-normal noise by this (1 unless the
    /// scheduler works in sigma space, as the Euler family does).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Scale the latents before the UNet call at `step_index` (index into
    /// timesteps()). Unscaled unless the scheduler works in sigma space; the
    /// index is still checked, so a bad one fails here as it would there.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> CandleResult<Tensor> {
        at(self.timesteps(), step_index, "timesteps")?;
        Ok(sample.clone())
    }
    /// One denoising step from timesteps()[step_index] to the next; returns the
    /// previous (less noisy) sample, in `sample`'s dtype.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> CandleResult<Tensor>;
    /// The estimate of the clean sample x0 made by the last `step` (diffusers'
    /// `pred_original_sample`), in the same space as `sample`: what previews
    /// show. None before the first step.
    fn pred_original_sample(&self) -> Option<&Tensor>;
    /// Noise clean latents to the noise level of timesteps()[step_index] (image
    /// to image). DDIM: sqrt(acp) x + sqrt(1 - acp) n; Euler family: x + sigma n.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> CandleResult<Tensor>;
}

/// Build a fresh scheduler for one job.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    let train = config.num_train_timesteps;
    if num_inference_steps == 0 || num_inference_steps > train {
        bail!(
            "num_inference_steps must be between 1 and num_train_timesteps ({train}), got {num_inference_steps}"
        );
    }
    let alphas_cumprod = betas::alphas_cumprod(config)?;
    let prediction = Prediction::parse(&config.prediction_type)?;
    let n = num_inference_steps;
    Ok(match kind {
        // build() always runs DDIM deterministically (eta = 0), as diffusers' pipelines do.
        SchedulerKind::Ddim => {
            Box::new(ddim::Ddim::new(config, alphas_cumprod, prediction, n, 0.0)?)
        }
        SchedulerKind::Ddpm => Box::new(ddpm::Ddpm::new(config, alphas_cumprod, prediction, n)?),
        SchedulerKind::Euler => {
            Box::new(euler::Euler::new(config, &alphas_cumprod, prediction, n)?)
        }
        SchedulerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(
            config,
            &alphas_cumprod,
            prediction,
            n,
        )?),
        SchedulerKind::DpmPp2m | SchedulerKind::DpmPp2mKarras => {
            let karras = kind == SchedulerKind::DpmPp2mKarras
                || (config.use_karras_sigmas
                    && config.class_name.as_deref() == Some("DPMSolverMultistepScheduler"));
            Box::new(dpmpp_2m::DpmPp2m::new(
                config,
                &alphas_cumprod,
                prediction,
                n,
                karras,
            )?)
        }
        SchedulerKind::UniPc => {
            let karras = config.use_karras_sigmas
                && config.class_name.as_deref() == Some("UniPCMultistepScheduler");
            Box::new(unipc::UniPc::new(
                config,
                &alphas_cumprod,
                prediction,
                n,
                karras,
            )?)
        }
        SchedulerKind::Lcm => Box::new(lcm::Lcm::new(config, alphas_cumprod, prediction, n)?),
        // No betas: the noise level is the flow's interpolation weight itself.
        SchedulerKind::FlowEuler => Box::new(flow_euler::FlowEuler::new(config, n)?),
    })
}

/// The dtype step maths runs in: half-precision latents are upcast to f32 (as
/// diffusers' Euler schedulers do) because x - sigma * eps at sigma ~ 15
/// cancels most of f16's 11-bit mantissa. Results are cast back to the sample's dtype.
fn compute_dtype(sample: &Tensor) -> DType {
    match sample.dtype() {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// `t` in `sample`'s compute dtype and on its device (model outputs and noise
/// may come in another dtype; adding mismatched dtypes is Candle's DDIM bug).
fn like_compute(t: &Tensor, sample: &Tensor) -> CandleResult<Tensor> {
    t.to_dtype(compute_dtype(sample))?
        .to_device(sample.device())
}

/// The forward process of discrete-time diffusion: `original` noised to the
/// timestep whose cumulative alpha is `alpha_cumprod`,
/// `sqrt(a) x + sqrt(1 - a) noise`, computed like the sample, returned in its dtype.
fn noise_to_alpha(original: &Tensor, noise: &Tensor, alpha_cumprod: f64) -> CandleResult<Tensor> {
    let x = like_compute(original, original)?;
    let n = like_compute(noise, original)?;
    ((x * alpha_cumprod.sqrt())? + (n * (1.0 - alpha_cumprod).sqrt())?)?.to_dtype(original.dtype())
}

/// Bounds-checked schedule lookup: a bad index is a Candle error, never a panic.
fn at(values: &[f64], index: usize, what: &str) -> CandleResult<f64> {
    values.get(index).copied().ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "scheduler: step index {index} out of range for {} {what}",
            values.len()
        ))
    })
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use candle_core::Device;

    /// Stable Diffusion 1.5's published scheduler_config.json (a PNDM config,
    /// which SD pipelines reuse for every scheduler).
    pub const SD15: &str = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
        "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#;

    pub fn sd15() -> SchedulerConfig {
        SchedulerConfig::from_json_str(SD15).unwrap()
    }

    /// Returns `value` everywhere, so stochastic steps are checkable by hand.
    /// Counts calls so tests can see when no noise was drawn.
    pub struct ConstNoise {
        pub value: f64,
        pub calls: usize,
    }

    impl ConstNoise {
        pub fn new(value: f64) -> Self {
            Self { value, calls: 0 }
        }
    }

    impl NoiseSource for ConstNoise {
        fn sample_like(&mut self, like: &Tensor) -> CandleResult<Tensor> {
            self.calls += 1;
            // Deliberately f32, whatever `like` is: schedulers must convert noise
            // to the sample's dtype themselves (Candle's f16 DDIM bug).
            Tensor::full(self.value as f32, like.shape(), like.device())
        }
    }

    /// A 1-D f32 test tensor.
    pub fn tensor(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    /// Flattened values as f64, whatever the dtype.
    pub fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Element-wise |got - want| <= tol.
    pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "{what}[{i}]: got {g}, want {w} (tol {tol})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for k in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_name(k.name()), Some(k));
        }
        assert_eq!(
            SchedulerKind::ALL.map(SchedulerKind::name),
            [
                "ddim",
                "ddpm",
                "euler",
                "euler_a",
                "dpmpp_2m",
                "dpmpp_2m_karras",
                "unipc",
                "lcm",
                "flow_euler"
            ]
        );
        assert_eq!(
            SchedulerKind::from_name("DPM++_2M_Karras"),
            Some(SchedulerKind::DpmPp2mKarras)
        );
        assert_eq!(
            SchedulerKind::from_name("uni_pc"),
            Some(SchedulerKind::UniPc)
        );
        assert_eq!(
            SchedulerKind::from_name("Euler_Ancestral"),
            Some(SchedulerKind::EulerAncestral)
        );
        assert_eq!(SchedulerKind::from_name("DDIM"), Some(SchedulerKind::Ddim));
        assert_eq!(SchedulerKind::from_name("pndm"), None);
        assert_eq!(SchedulerKind::from_name(""), None);
    }

    #[test]
    fn every_a1111_name_and_label_parses_back_to_its_scheduler() {
        for k in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_wire(k.wire()), k);
            for spelling in [k.a1111_name(), k.label(), k.name()] {
                for s in [
                    spelling.to_string(),
                    spelling.to_uppercase(),
                    spelling.to_lowercase(),
                ] {
                    // Among the kinds a model of k's family takes, s names k alone.
                    let named: Vec<_> = SchedulerKind::candidates(&s)
                        .filter(|c| c.is_flow_matching() == k.is_flow_matching())
                        .collect();
                    assert_eq!(named, [k], "{s:?}");
                }
            }
        }
        assert_eq!(SchedulerKind::EulerAncestral.a1111_name(), "Euler a");
        assert_eq!(SchedulerKind::DpmPp2mKarras.label(), "DPM++ 2M Karras");
        assert_eq!(SchedulerKind::FlowEuler.a1111_name(), "Euler");
        assert_eq!(
            SchedulerKind::candidates("euler").collect::<Vec<_>>(),
            [SchedulerKind::Euler, SchedulerKind::FlowEuler]
        );
    }

    #[test]
    fn diffusers_classes() {
        assert_eq!(
            SchedulerKind::from_diffusers_class("DDIMScheduler"),
            Some(SchedulerKind::Ddim)
        );
        assert_eq!(
            SchedulerKind::from_diffusers_class("EulerDiscreteScheduler"),
            Some(SchedulerKind::Euler)
        );
        assert_eq!(
            SchedulerKind::from_diffusers_class("EulerAncestralDiscreteScheduler"),
            Some(SchedulerKind::EulerAncestral)
        );
        for (class, kind) in [
            ("DDPMScheduler", SchedulerKind::Ddpm),
            ("DPMSolverMultistepScheduler", SchedulerKind::DpmPp2m),
            ("UniPCMultistepScheduler", SchedulerKind::UniPc),
            ("LCMScheduler", SchedulerKind::Lcm),
            ("FlowMatchEulerDiscreteScheduler", SchedulerKind::FlowEuler),
        ] {
            assert_eq!(SchedulerKind::from_diffusers_class(class), Some(kind));
        }
        assert_eq!(SchedulerKind::from_diffusers_class("PNDMScheduler"), None);
        assert_eq!(
            SchedulerKind::from_diffusers_class("LMSDiscreteScheduler"),
            None
        );
    }

    #[test]
    fn model_defaults_and_availability() {
        let with_class = |c: &str| {
            SchedulerConfig::from_json_str(&format!(r#"{{"_class_name": "{c}"}}"#)).unwrap()
        };
        // Unimplemented classes (SD 1.5's PNDM, LMS) fall back to Euler.
        assert_eq!(SchedulerKind::default_for(&sd15()), SchedulerKind::Euler);
        assert_eq!(
            SchedulerKind::default_for(&with_class("LMSDiscreteScheduler")),
            SchedulerKind::Euler
        );
        assert_eq!(
            SchedulerKind::default_for(&SchedulerConfig::from_json_str("{}").unwrap()),
            SchedulerKind::Euler
        );
        assert_eq!(
            SchedulerKind::default_for(&with_class("LCMScheduler")),
            SchedulerKind::Lcm
        );
        assert_eq!(
            SchedulerKind::default_for(&with_class("DPMSolverMultistepScheduler")),
            SchedulerKind::DpmPp2m
        );
        let sd3 = with_class("FlowMatchEulerDiscreteScheduler");
        assert!(sd3.is_flow_matching() && !sd15().is_flow_matching());
        assert_eq!(SchedulerKind::default_for(&sd3), SchedulerKind::FlowEuler);
        // Another flow-matching class not implemented here still defaults to flow Euler.
        let heun = with_class("FlowMatchHeunDiscreteScheduler");
        assert_eq!(SchedulerKind::default_for(&heun), SchedulerKind::FlowEuler);

        let diffusion = SchedulerKind::available(false);
        assert_eq!(diffusion.len(), 8);
        assert!(!diffusion.contains(&SchedulerKind::FlowEuler));
        assert_eq!(SchedulerKind::available(true), [SchedulerKind::FlowEuler]);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_value() {
        let cfg = sd15();
        let msg = |r: Result<Box<dyn Scheduler>>| match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        };
        for kind in SchedulerKind::ALL {
            assert!(msg(build(kind, &cfg, 0)).contains("got 0"));
            assert!(msg(build(kind, &cfg, 1001)).contains("got 1001"));
            // LCM runs at most original_inference_steps (50) steps.
            let most = if kind == SchedulerKind::Lcm { 50 } else { 1000 };
            assert!(build(kind, &cfg, most).is_ok(), "{kind:?}");

            let mut bad = cfg.clone();
            bad.beta_schedule = "cubic".into();
            assert!(msg(build(kind, &bad, 10)).contains("cubic"));

            let mut bad = cfg.clone();
            bad.prediction_type = "flow".into();
            assert!(msg(build(kind, &bad, 10)).contains("flow"));

            // LCM and flow Euler have their own spacing and ignore the key, as in diffusers.
            if !matches!(kind, SchedulerKind::Lcm | SchedulerKind::FlowEuler) {
                let mut bad = cfg.clone();
                bad.timestep_spacing = Some("sideways".into());
                assert!(msg(build(kind, &bad, 10)).contains("sideways"), "{kind:?}");
            }
        }
    }

    #[test]
    fn out_of_range_step_index_is_an_error() {
        let x = tensor(&[1.0, 2.0]);
        for kind in SchedulerKind::ALL {
            let mut s = build(kind, &sd15(), 4).unwrap();
            let mut noise = ConstNoise::new(0.0);
            assert!(s.step(&x, 4, &x, &mut noise).is_err(), "{kind:?}");
            assert!(s.scale_model_input(&x, 9).is_err(), "{kind:?}");
            assert!(s.add_noise(&x, &x, 9).is_err(), "{kind:?}");
        }
    }
}
