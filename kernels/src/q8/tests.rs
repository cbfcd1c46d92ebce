//! The int8 kernels against an independent f64 evaluation of the same
//! quantised operands, against each other, and against the f32 layers.

use candle_core::{DType, Device, Tensor};

use super::conv::conv2d_on;
use super::linear::linear_on;
use super::{Isa, Q8Weight};
use crate::conv2d::{conv2d_bias, Conv2dParams};
use crate::test_util::max_abs;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    // Mostly small values with a few large ones, as activations have.
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let x = rng.random_range(-1.0f32..1.0);
            if rng.random_range(0..50) == 0 {
                8.0 * x
            } else {
                x
            }
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn vec1(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The kernel's own activation quantisation, written out: scale and `q`.
fn quantize(v: &[f32]) -> (f64, Vec<i64>) {
    let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 {
        return (0.0, vec![0; v.len()]);
    }
    let inv = 127.0 / amax;
    let q = v
        .iter()
        .map(|x| (x * inv).round_ties_even().clamp(-127.0, 127.0) as i64)
        .collect();
    ((amax / 127.0) as f64, q)
}

/// Largest error relative to the largest reference value, and the RMS error
/// relative to the reference's RMS.
fn errors(y: &Tensor, reference: &Tensor) -> (f32, f32) {
    let (a, b) = (vec1(y), vec1(reference));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rms = |v: &mut dyn Iterator<Item = f32>| {
        let (s, n) = v.fold((0f64, 0usize), |(s, n), x| (s + (x as f64).powi(2), n + 1));
        (s / n as f64).sqrt() as f32
    };
    let err_rms = rms(&mut a.iter().zip(&b).map(|(x, y)| x - y));
    (
        max_abs(y, reference) / scale,
        err_rms / rms(&mut b.iter().copied()),
    )
}

/// The instruction sets to compare: every one this CPU runs.
fn isas() -> Vec<Isa> {
    let isas = Isa::supported();
    if !isas.contains(&Isa::Avx512Vnni) {
        eprintln!("this CPU has no AVX-512 VNNI: its kernel is not checked here");
    }
    isas
}

#[test]
fn weights_round_trip_within_half_a_step() {
    let w = randn(&[37, 53], 1);
    let q = Q8Weight::quantize(&w).unwrap();
    assert_eq!(q.n_k(), (37, 53));
    let back = q.dequantize().unwrap();
    let (wv, bv) = (vec1(&w), vec1(&back));
    for o in 0..37 {
        let s = q.scale(o);
        let row = &wv[o * 53..(o + 1) * 53];
        assert_eq!(s, row.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0);
        for j in 0..53 {
            assert!((wv[o * 53 + j] - bv[o * 53 + j]).abs() <= s * 0.5 + 1e-7);
        }
    }
    // Quantising the dequantised weight gives the same integers (LoRA restores).
    let again = Q8Weight::quantize(&back).unwrap();
    for o in 0..37 {
        for j in 0..53 {
            assert_eq!(again.q(o, j), q.q(o, j), "[{o}, {j}]");
        }
    }
    // An all-zero row and a non-finite one.
    let z = Q8Weight::quantize(&Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(vec1(&z.dequantize().unwrap()), vec![0.0; 10]);
    let bad = Tensor::new(&[[1f32, f32::NAN]], &Device::Cpu).unwrap();
    assert!(Q8Weight::quantize(&bad)
        .unwrap_err()
        .to_string()
        .contains("not finite"));
}

#[test]
fn linear_is_the_exact_product_of_the_quantised_operands() {
    // m not a multiple of the tile rows, n not of 16, k not of 4; and a
    // batch large enough for several tasks.
    for &(m, n, k) in &[(3, 5, 7), (70, 37, 53), (130, 64, 320), (9, 100, 1)] {
        let x = randn(&[m, k], 2);
        let w = randn(&[n, k], 3);
        let b = randn(&[n], 4);
        let q = Q8Weight::quantize(&w).unwrap();
        let xv = vec1(&x);
        let bv = vec1(&b);
        let mut expected = vec![0f64; m * n];
        for r in 0..m {
            let (sa, qa) = quantize(&xv[r * k..(r + 1) * k]);
            for o in 0..n {
                let sum: i64 = (0..k).map(|j| qa[j] * q.q(o, j) as i64).sum();
                expected[r * n + o] = sum as f64 * sa * q.scale(o) as f64 + bv[o] as f64;
            }
        }
        let mut outputs = vec![];
        for isa in isas() {
            let y = vec1(&linear_on(isa, &x, &q, Some(&b)).unwrap());
            for (i, (&got, &want)) in y.iter().zip(&expected).enumerate() {
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{isa:?} {m}x{n}x{k} [{i}]: {got} vs {want}"
                );
            }
            outputs.push(y);
        }
        // Every ISA gives the same bits.
        assert!(outputs.windows(2).all(|p| p[0] == p[1]), "{m}x{n}x{k}");
    }
}

#[test]
fn linear_stays_close_to_f32_and_keeps_leading_dims() {
    let x = randn(&[2, 77, 320], 5);
    let w = randn(&[640, 320], 6);
    let q = Q8Weight::quantize(&w).unwrap();
    let y = linear_on(Isa::detect(), &x, &q, None).unwrap();
    assert_eq!(y.dims(), &[2, 77, 640]);
    let reference = x.broadcast_matmul(&w.t().unwrap()).unwrap();
    let (max, rms) = errors(&y, &reference);
    eprintln!("q8 linear against f32: max {max:.4}, rms {rms:.4}");
    assert!(
        max < 0.03 && rms < 0.035,
        "relative error: max {max}, rms {rms}"
    );
    // Off the kernel's case (f64): the dequantised weight, same shape.
    let y64 = linear_on(Isa::detect(), &x.to_dtype(DType::F64).unwrap(), &q, None).unwrap();
    assert_eq!((y64.dtype(), y64.dims()), (DType::F64, y.dims()));
    // Shapes that do not fit.
    assert!(linear_on(Isa::detect(), &randn(&[2, 3], 7), &q, None).is_err());
    assert!(linear_on(Isa::detect(), &x, &q, Some(&randn(&[5], 8))).is_err());
}

/// The convolution's f64 evaluation over the quantised operands: each output
/// pixel's receptive field quantised with its own scale.
fn conv_expected(
    x: &Tensor,
    q: &Q8Weight,
    bias: &[f32],
    p: Conv2dParams,
) -> (Vec<usize>, Vec<f64>) {
    let (b, c_in, h, w) = x.dims4().unwrap();
    let (c_out, _, kh, kw) = (q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]);
    let out_h = (h + 2 * p.padding - p.dilation * (kh - 1) - 1) / p.stride + 1;
    let out_w = (w + 2 * p.padding - p.dilation * (kw - 1) - 1) / p.stride + 1;
    let xv = vec1(x);
    let mut out = vec![0f64; b * c_out * out_h * out_w];
    for bi in 0..b {
        for oy in 0..out_h {
            for ox in 0..out_w {
                let mut field = vec![];
                for c in 0..c_in {
                    for i in 0..kh {
                        for j in 0..kw {
                            let iy = (oy * p.stride + i * p.dilation) as isize - p.padding as isize;
                            let ix = (ox * p.stride + j * p.dilation) as isize - p.padding as isize;
                            let inside =
                                iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                            field.push(if inside {
                                xv[((bi * c_in + c) * h + iy as usize) * w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
                let (sa, qa) = quantize(&field);
                for o in 0..c_out {
                    let sum: i64 = qa
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| a * q.q(o, j) as i64)
                        .sum();
                    out[((bi * c_out + o) * out_h + oy) * out_w + ox] =
                        sum as f64 * sa * q.scale(o) as f64 + bias[o] as f64;
                }
            }
        }
    }
    (vec![b, c_out, out_h, out_w], out)
}

#[test]
fn conv2d_is_the_exact_product_of_the_quantised_operands() {
    let params = |padding, stride, dilation| Conv2dParams {
        padding,
        stride,
        dilation,
    };
    let cases: &[(&[usize], &[usize], Conv2dParams)] = &[
        (&[2, 8, 20, 33], &[12, 8, 3, 3], params(1, 1, 1)),
        (&[1, 5, 17, 12], &[7, 5, 3, 3], params(1, 2, 1)),
        (&[2, 16, 9, 30], &[24, 16, 1, 1], params(0, 1, 1)),
        (&[1, 3, 9, 9], &[17, 3, 3, 3], params(0, 1, 2)),
        (&[1, 4, 40, 40], &[4, 4, 3, 3], params(1, 1, 1)),
    ];
    for (i, (xs, ks, p)) in cases.iter().enumerate() {
        let x = randn(xs, 10 + i as u64);
        let q = Q8Weight::quantize(&randn(ks, 20 + i as u64)).unwrap();
        let b = randn(&[ks[0]], 30 + i as u64);
        let (dims, expected) = conv_expected(&x, &q, &vec1(&b), *p);
        let mut outputs = vec![];
        for isa in isas() {
            let y = conv2d_on(isa, &x, &q, Some(&b), *p).unwrap();
            assert_eq!(y.dims(), dims.as_slice());
            let y = vec1(&y);
            for (j, (&got, &want)) in y.iter().zip(&expected).enumerate() {
                assert!(
                    (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{isa:?} case {i} [{j}]: {got} vs {want}"
                );
            }
            outputs.push(y);
        }
        assert!(outputs.windows(2).all(|p| p[0] == p[1]), "case {i}");
    }
}

#[test]
fn conv2d_stays_close_to_f32() {
    let p = Conv2dParams {
        padding: 1,
        stride: 1,
        dilation: 1,
    };
    let x = randn(&[2, 32, 24, 24], 40);
    let w = randn(&[48, 32, 3, 3], 41);
    let q = Q8Weight::quantize(&w).unwrap();
    let y = conv2d_on(Isa::detect(), &x, &q, None, p).unwrap();
    let reference = conv2d_bias(&x, &w, None, p, 1).unwrap();
    let (max, rms) = errors(&y, &reference);
    eprintln!("q8 conv2d against f32: max {max:.4}, rms {rms:.4}");
    assert!(
        max < 0.03 && rms < 0.035,
        "relative error: max {max}, rms {rms}"
    );
    assert!(conv2d_on(
        Isa::detect(),
        &x,
        &Q8Weight::quantize(&randn(&[4, 32], 42)).unwrap(),
        None,
        p
    )
    .is_err());
}
