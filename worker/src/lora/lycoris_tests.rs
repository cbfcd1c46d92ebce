//! LyCORIS deltas against PEFT 0.21.2's LoHa/LoKr merges, lycoris-lora
//! 4.1.3's own rebuilds (which agree with the loaders' formulas to 1e-16) and
//! the LoCon Tucker module's forward, value for value; DoRA against
//! lycoris-lora's `weight_decompose`. `tests/reference/lycoris_reference.json`
//! was computed by `lycoris_reference.py` beside it (in f64) on the modules
//! [`tiny_modules`] builds.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::*;

/// Largest difference allowed, relative to the case's largest |delta|.
const RELATIVE_TOLERANCE: f64 = 1e-5;

#[derive(Deserialize)]
struct Input {
    shape: Vec<usize>,
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    target_shape: Vec<usize>,
    alpha: Option<f64>,
    scale: f64,
    tensors: HashMap<String, Input>,
    delta: Vec<f64>,
}

#[derive(Deserialize)]
struct DoraCase {
    module: String,
    base: Vec<f64>,
    dora_scale: Input,
    delta: Vec<f64>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    dora_cases: Vec<DoraCase>,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../../tests/reference/lycoris_reference.json")).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn tiny_modules_are_the_reference_inputs() {
    let reference = reference();
    let modules = tiny_modules(&Device::Cpu).unwrap();
    assert_eq!(modules.len(), reference.cases.len());
    for (m, case) in modules.iter().zip(&reference.cases) {
        assert_eq!(m.name, case.name);
        assert_eq!(m.target_shape, case.target_shape);
        assert_eq!(m.tensors.alpha().unwrap(), case.alpha, "{}", m.name);
        let suffixes = m.tensors.suffixes().filter(|s| *s != "alpha").count();
        assert_eq!(suffixes, case.tensors.len(), "{}", m.name);
        for (suffix, input) in &case.tensors {
            let t = m.tensors.get(suffix).unwrap();
            assert_eq!(t.dims(), input.shape.as_slice(), "{} {suffix}", m.name);
            let gap = max_abs_diff(&values(t), &input.values);
            assert!(gap <= 1e-7, "{} {suffix}: inputs differ by {gap}", m.name);
        }
    }
}

#[test]
fn deltas_match_peft_and_the_loaders() {
    let reference = reference();
    let modules = tiny_modules(&Device::Cpu).unwrap();
    for (m, case) in modules.iter().zip(&reference.cases) {
        let d = delta(&m.tensors, &m.target_shape, 1.0).unwrap().unwrap();
        assert_eq!(d.dtype(), DType::F32);
        assert_eq!(d.dims(), case.target_shape.as_slice(), "{}", m.name);
        let got = values(&d);
        let peak = case.delta.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let gap = max_abs_diff(&got, &case.delta);
        println!(
            "{:28} scale {:.4}  max |delta| {peak:.3e}  max abs diff {gap:.2e}  relative {:.2e}",
            m.name,
            case.scale,
            gap / peak
        );
        assert!(
            gap <= RELATIVE_TOLERANCE * peak,
            "{}: off the reference by {gap} (max |delta| {peak})",
            m.name
        );
        // Non-trivial: well above the tolerance, and varied values.
        assert!(peak > 1e-3, "{}: delta is nearly zero", m.name);
        let mut distinct: Vec<i64> = case.delta.iter().map(|v| (v * 1e7) as i64).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() * 2 > case.delta.len(),
            "{}: few distinct values",
            m.name
        );
        // The scale is part of what is tested: a wrong scale misses by far more.
        if case.scale != 1.0 {
            let unscaled: Vec<f64> = case.delta.iter().map(|v| v / case.scale).collect();
            assert!(max_abs_diff(&got, &unscaled) > 100.0 * RELATIVE_TOLERANCE * peak);
        }
    }
}

#[test]
fn a_full_lokr_ignores_alpha() {
    let m = tiny_modules(&Device::Cpu).unwrap();
    let full = m.iter().find(|m| m.name == "lokr_linear_full").unwrap();
    let mut no_alpha = full.tensors.clone();
    no_alpha.tensors.remove("alpha");
    let a = values(
        &delta(&full.tensors, &full.target_shape, 1.0)
            .unwrap()
            .unwrap(),
    );
    let b = values(&delta(&no_alpha, &full.target_shape, 1.0).unwrap().unwrap());
    assert_eq!(a, b);
}

#[test]
fn the_multiplier_scales_and_zero_gives_zero() {
    for m in tiny_modules(&Device::Cpu).unwrap() {
        let one = values(&delta(&m.tensors, &m.target_shape, 1.0).unwrap().unwrap());
        let half = values(&delta(&m.tensors, &m.target_shape, -0.5).unwrap().unwrap());
        let zero = values(&delta(&m.tensors, &m.target_shape, 0.0).unwrap().unwrap());
        let want: Vec<f64> = one.iter().map(|v| -0.5 * v).collect();
        assert!(max_abs_diff(&half, &want) <= 1e-7, "{}", m.name);
        assert!(zero.iter().all(|v| *v == 0.0), "{}", m.name);
    }
}

#[test]
fn half_precision_tensors_give_an_f32_delta() {
    for m in tiny_modules(&Device::Cpu).unwrap() {
        let mut f16 = ModuleTensors::new();
        for s in m.tensors.suffixes() {
            f16.insert(s, m.tensors.get(s).unwrap().to_dtype(DType::F16).unwrap());
        }
        let d = delta(&f16, &m.target_shape, 1.0).unwrap().unwrap();
        assert_eq!(d.dtype(), DType::F32);
        let exact = values(&delta(&m.tensors, &m.target_shape, 1.0).unwrap().unwrap());
        let peak = exact.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(
            max_abs_diff(&values(&d), &exact) < 1e-2 * peak.max(1e-3),
            "{}",
            m.name
        );
    }
}

#[test]
fn plain_lora_is_not_lycoris() {
    let dev = Device::Cpu;
    let mut m = ModuleTensors::new();
    m.insert("lora_up", wave_tensor(&[4, 2], 1, &dev).unwrap());
    m.insert("lora_down", wave_tensor(&[2, 3], 2, &dev).unwrap());
    m.insert("alpha", Tensor::new(1f32, &dev).unwrap());
    assert_eq!(kind(&m), None);
    assert!(delta(&m, &[4, 3], 1.0).unwrap().is_none());
}

fn error_of(m: &ModuleTensors, target: &[usize]) -> String {
    format!("{:#}", delta(m, target, 1.0).unwrap_err())
}

fn case(name: &str) -> TinyModule {
    tiny_modules(&Device::Cpu)
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap()
}

#[test]
fn inconsistent_tensors_are_named_errors() {
    let dev = Device::Cpu;
    let loha = case("loha_linear");
    // A missing factor.
    let mut m = loha.tensors.clone();
    m.tensors.remove("hada_w2_b");
    assert!(error_of(&m, &[12, 10]).contains("hada_w2_b"));
    // Inner dimensions that do not multiply.
    let mut m = loha.tensors.clone();
    m.insert("hada_w1_b", wave_tensor(&[4, 10], 3, &dev).unwrap());
    let e = error_of(&m, &[12, 10]);
    assert!(e.contains("hada_w1_a") && e.contains("hada_w1_b"), "{e}");
    // A target of another size.
    let e = error_of(&loha.tensors, &[12, 11]);
    assert!(e.contains("[12, 11]"), "{e}");
    // Half a Tucker pair.
    let mut m = case("loha_conv_tucker").tensors;
    m.tensors.remove("hada_t2");
    assert!(error_of(&m, &[6, 4, 3, 3]).contains("hada_t2"));
    // A Tucker core that does not fit its factors.
    let mut m = case("lokr_conv_tucker").tensors;
    m.insert("lokr_t2", wave_tensor(&[3, 2, 3, 3], 4, &dev).unwrap());
    assert!(error_of(&m, &[6, 4, 3, 3]).contains("lokr_t2"));
    // LoKr with neither form of a factor, or both.
    let mut m = case("lokr_linear").tensors;
    m.tensors.remove("lokr_w1");
    assert!(error_of(&m, &[12, 10]).contains("lokr_w1"));
    let mut m = case("lokr_linear").tensors;
    m.insert("lokr_w2", wave_tensor(&[4, 5], 5, &dev).unwrap());
    assert!(error_of(&m, &[12, 10]).contains("lokr_w2"));
    // An alpha of several values; DoRA.
    let mut m = loha.tensors.clone();
    m.insert("alpha", wave_tensor(&[2], 6, &dev).unwrap());
    assert!(error_of(&m, &[12, 10]).contains("alpha"));
    let mut m = loha.tensors.clone();
    m.insert("dora_scale", wave_tensor(&[12, 1], 7, &dev).unwrap());
    assert!(error_of(&m, &[12, 10]).contains("dora_scale"));
}

#[test]
fn a_kohya_named_safetensors_round_trip_gives_the_same_delta() {
    // The layout users have: `<module>.<suffix>` keys, a 0-d alpha.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny_lycoris.safetensors");
    let modules = tiny_modules(&Device::Cpu).unwrap();
    let mut all = HashMap::new();
    for m in &modules {
        for s in m.tensors.suffixes() {
            let key = format!("lora_unet_{}.{s}", m.name);
            all.insert(key, m.tensors.get(s).unwrap().clone());
        }
    }
    candle_core::safetensors::save(&all, &path).unwrap();
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    for m in &modules {
        let prefix = format!("lora_unet_{}.", m.name);
        let mut back = ModuleTensors::new();
        for (k, t) in &loaded {
            if let Some(s) = k.strip_prefix(&prefix) {
                back.insert(s, t.clone());
            }
        }
        assert_eq!(back.alpha().unwrap(), m.tensors.alpha().unwrap());
        let a = values(&delta(&back, &m.target_shape, 0.8).unwrap().unwrap());
        let b = values(&delta(&m.tensors, &m.target_shape, 0.8).unwrap().unwrap());
        assert_eq!(a, b, "{}", m.name);
    }
}

fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    let v: Vec<f32> = values.iter().map(|x| *x as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn dora_deltas_match_lycoris_weight_decompose() {
    let reference = reference();
    assert_eq!(reference.dora_cases.len(), 3);
    for dc in &reference.dora_cases {
        let mut m = case(&dc.module);
        let shape = m.target_shape.clone();
        let base = tensor(&dc.base, &shape);
        let ds = tensor(&dc.dora_scale.values, &dc.dora_scale.shape);
        // Without the base weight, DoRA is refused, naming the tensor.
        m.tensors.insert("dora_scale", ds);
        assert!(error_of(&m.tensors, &shape).contains("dora_scale"));
        let d = delta_with_base(&m.tensors, &base, 1.0).unwrap().unwrap();
        assert_eq!(d.dims(), shape.as_slice());
        let got = values(&d);
        let peak = dc.delta.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let gap = max_abs_diff(&got, &dc.delta);
        println!(
            "dora {:20} on {:?}  max |delta| {peak:.3e}  max abs diff {gap:.2e}",
            dc.module, dc.dora_scale.shape
        );
        assert!(
            gap <= RELATIVE_TOLERANCE * peak,
            "{}: off by {gap}",
            dc.module
        );
        // DoRA changes the plain delta, and the multiplier scales linearly to zero.
        let plain = values(
            &delta_with_base(&case(&dc.module).tensors, &base, 1.0)
                .unwrap()
                .unwrap(),
        );
        assert!(max_abs_diff(&plain, &got) > 1e-2 * peak);
        let half = values(&delta_with_base(&m.tensors, &base, 0.5).unwrap().unwrap());
        let want: Vec<f64> = got.iter().map(|v| 0.5 * v).collect();
        assert!(max_abs_diff(&half, &want) <= 1e-7);
        let zero = values(&delta_with_base(&m.tensors, &base, 0.0).unwrap().unwrap());
        assert!(zero.iter().all(|v| *v == 0.0));
    }
    // A dora_scale on neither axis is a named error.
    let mut m = case("loha_linear");
    m.tensors
        .insert("dora_scale", wave_tensor(&[5, 1], 1, &Device::Cpu).unwrap());
    let base = wave_tensor(&m.target_shape, 99, &Device::Cpu).unwrap();
    let e = format!("{:#}", delta_with_base(&m.tensors, &base, 1.0).unwrap_err());
    assert!(e.contains("dora_scale"), "{e}");
}
