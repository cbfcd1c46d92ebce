//! `rng: "nv"`: AUTOMATIC1111's NV noise source. The generator must draw the
//! values A1111's own `modules/rng_philox.py` draws (reference values from
//! tests/reference/a1111_nv_reference.py, run against A1111's module), and the
//! field must work end to end: accepted, deterministic per seed, a picture of
//! its own, and named `RNG: NV` in the PNG as A1111 writes it.

mod common;

use common::Worker;
use sd_worker::pipeline::noise::philox::PhiloxGenerator;
use sd_worker::pipeline::noise::SeededNoise;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Reference {
    numpy: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    seed: u64,
    shape: Vec<usize>,
    stride: usize,
    /// f32 bit patterns of each draw, every `stride`-th value.
    draws: Vec<Vec<u32>>,
}

/// Every value of every draw (three in a row per generator: the starting
/// noise, then two ancestral steps) has A1111's bits: the f64 Box-Muller is
/// evaluated as numpy does and rounded once to f32, so the same float32 comes
/// out (the test allows no difference at all).
#[test]
fn nv_noise_is_bit_identical_to_automatic1111s_philox_generator() {
    let r: Reference =
        serde_json::from_str(include_str!("reference/a1111_nv_reference.json")).unwrap();
    assert_eq!(r.cases.len(), 28, "numpy {}", r.numpy);
    let mut compared = 0;
    for case in &r.cases {
        let count: usize = case.shape.iter().product();
        let mut g = PhiloxGenerator::new(case.seed);
        for (d, theirs) in case.draws.iter().enumerate() {
            let ours: Vec<u32> = g
                .randn(count)
                .iter()
                .step_by(case.stride)
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(
                ours.len(),
                theirs.len(),
                "seed {} shape {:?}",
                case.seed,
                case.shape
            );
            for (j, (o, t)) in ours.iter().zip(theirs).enumerate() {
                assert_eq!(
                    o,
                    t,
                    "seed {} shape {:?} draw {d} value {}: {} vs A1111's {} (numpy {})",
                    case.seed,
                    case.shape,
                    j * case.stride,
                    f32::from_bits(*o),
                    f32::from_bits(*t),
                    r.numpy
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 5000, "{compared}");
}

/// The job's noise for image `i` is A1111's generator for `seed + i`: its
/// first draw is the starting latents and each later draw takes the next
/// offset, as A1111's k-diffusion samplers take `p.rng.next()`. An input
/// image's posterior sample (drawn by A1111 from another generator) does not
/// move those offsets.
#[test]
fn each_image_draws_from_its_own_a1111_generator_in_order() {
    use candle_core::{DType, Device};
    let seed = 2u64.pow(32) + 5;
    let mut noise =
        SeededNoise::with_rng(sd_worker_sdk::Rng::Nv, seed, 2, &Device::Cpu, DType::F32);
    let flat = |t: candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let first = flat(noise.sample(&[4, 8, 8]).unwrap());
    let posterior = flat(noise.sample_posterior(&[4, 8, 8]).unwrap());
    let second = flat(noise.sample(&[4, 8, 8]).unwrap());
    assert_ne!(posterior, first);
    assert_ne!(posterior, second);
    for i in 0..2u64 {
        let mut g = PhiloxGenerator::new(seed + i);
        let range = i as usize * 256..(i as usize + 1) * 256;
        assert_eq!(&first[range.clone()], &g.randn(256)[..]);
        assert_eq!(&second[range], &g.randn(256)[..]);
    }
    assert!(!noise.posterior_before_noise());
}

fn job(rng: &str, seed: u64) -> serde_json::Value {
    json!({"operation": "image_generation", "prompt": "a red square", "steps": 3,
           "width": 64, "height": 64, "seed": seed, "num_images": 2,
           "scheduler": "euler_ancestral", "rng": rng})
}

#[tokio::test]
async fn nv_jobs_are_deterministic_per_seed_and_differ_from_the_other_sources() {
    let w = Worker::start(&[]).await;
    let (_, a) = w.run_job(job("nv", 42)).await;
    let (_, b) = w.run_job(job("nv", 42)).await;
    assert_eq!(a, b, "same seed, same rng: same bytes");
    assert_ne!(a[0], a[1], "image 1 uses seed + 1");
    let (_, other_seed) = w.run_job(job("nv", 43)).await;
    // Image 1 of seed 42 is image 0 of seed 43 (both PNGs say Seed: 43).
    assert_eq!(a[1], other_seed[0]);
    for rng in ["chacha", "torch-cpu"] {
        let (_, c) = w.run_job(job(rng, 42)).await;
        let pixels = |png: &[u8]| image::load_from_memory(png).unwrap().to_rgb8().into_raw();
        assert_ne!(
            pixels(&a[0]),
            pixels(&c[0]),
            "nv and {rng} drew the same picture"
        );
    }
}

#[tokio::test]
async fn the_png_parameters_say_rng_nv_as_automatic1111_writes_it() {
    let w = Worker::start(&[]).await;
    let (_, png) = w.run_job(job("nv", 7)).await;
    let text = sd_worker::pipeline::encode::read_png_parameters(&png[0]).unwrap();
    assert!(text.ends_with(", RNG: NV"), "{text}");
}

/// `RNG: NV` copied from a PNG's parameters works as it is written.
#[tokio::test]
async fn a1111s_spelling_of_the_rng_draws_the_same_noise() {
    let w = Worker::start(&[]).await;
    let (_, wire) = w.run_job(job("nv", 5)).await;
    let (_, a1111) = w.run_job(job("NV", 5)).await;
    assert_eq!(wire, a1111);
}

#[tokio::test]
async fn an_unknown_rng_is_refused_naming_the_field() {
    let w = Worker::start(&[]).await;
    for bad in [json!("Nv-Gpu"), json!("philox"), json!(1)] {
        let mut body = job("nv", 1);
        body["rng"] = bad.clone();
        let (status, _, err) = w.submit_raw(body.to_string()).await;
        assert_eq!(status, 422, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "rng", "{bad}: {err}");
    }
}
