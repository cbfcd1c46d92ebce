//! `pred_original_sample` (what previews show) for every scheduler: given a
//! perfect model, the estimate each step makes is the clean sample itself, at
//! the first step and mid-schedule, in the sample's own space.

use super::test_util::*;
use super::*;

const X0: [f32; 4] = [0.5, -0.25, 0.8, -1.0];
const NOISE: [f32; 4] = [0.3, -0.7, 1.1, 0.05];

fn config(kind: SchedulerKind) -> SchedulerConfig {
    if kind.is_flow_matching() {
        SchedulerConfig::from_json_str(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}"#,
        )
        .unwrap()
    } else {
        sd15()
    }
}

#[test]
fn every_scheduler_estimates_the_clean_sample_of_a_perfect_model() {
    let (x0, noise) = (tensor(&X0), tensor(&NOISE));
    for kind in SchedulerKind::ALL {
        for start in [0, 5] {
            let mut s = build(kind, &config(kind), 10).unwrap();
            assert!(
                s.pred_original_sample().is_none(),
                "{kind:?}: before any step"
            );
            let x = s.add_noise(&x0, &noise, start).unwrap();
            // What a perfect model predicts: the noise (epsilon), or the
            // velocity noise - x0 of a flow-matching model.
            let out = if kind.is_flow_matching() {
                (&noise - &x0).unwrap()
            } else {
                noise.clone()
            };
            s.step(&out, start, &x, &mut ConstNoise::new(0.0)).unwrap();
            let got = s.pred_original_sample().expect("an estimate after a step");
            // LCM's estimate is c_out x0 + c_skip x, with c_skip ~ 1e-7 this far from t = 0.
            assert_close(
                &values(got),
                &values(&x0),
                1e-4,
                &format!("{kind:?} from step {start}"),
            );
        }
    }
}
