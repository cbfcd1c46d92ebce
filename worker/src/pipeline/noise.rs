//! Reproducible noise: every image of a job has its own ChaCha RNG seeded with
//! `seed + index`, and noise is drawn on the CPU in f32 before moving to the
//! model's device and dtype. Device RNGs differ across backends and launches
//! (Candle's example seeds the device: not reproducible), so they are never used.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::scheduler::NoiseSource;

pub struct SeededNoise {
    rngs: Vec<ChaCha8Rng>,
    device: Device,
    dtype: DType,
}

impl SeededNoise {
    /// One stream per image, for seeds `seed`, `seed + 1`, ...
    pub fn new(seed: u64, images: usize, device: &Device, dtype: DType) -> Self {
        Self {
            rngs: (0..images as u64)
                .map(|i| ChaCha8Rng::seed_from_u64(seed.wrapping_add(i)))
                .collect(),
            device: device.clone(),
            dtype,
        }
    }

    /// Standard normal noise of shape [images, ...per_image].
    pub fn sample(&mut self, per_image: &[usize]) -> candle_core::Result<Tensor> {
        let count: usize = per_image.iter().product();
        let mut values = Vec::with_capacity(count * self.rngs.len());
        for rng in &mut self.rngs {
            values.extend((0..count).map(|_| {
                let v: f32 = StandardNormal.sample(rng);
                v
            }));
        }
        let mut shape = vec![self.rngs.len()];
        shape.extend_from_slice(per_image);
        Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)
    }
}

impl NoiseSource for SeededNoise {
    fn sample_like(&mut self, like: &Tensor) -> candle_core::Result<Tensor> {
        let dims = like.dims();
        if dims.first() != Some(&self.rngs.len()) {
            candle_core::bail!(
                "noise requested for batch {:?}, but the job has {} images",
                dims.first(),
                self.rngs.len()
            );
        }
        self.sample(&dims[1..])?
            .to_dtype(like.dtype())?
            .to_device(like.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_images_are_independent_streams() {
        let mut a = SeededNoise::new(7, 2, &Device::Cpu, DType::F32);
        let mut b = SeededNoise::new(7, 2, &Device::Cpu, DType::F32);
        let ta = a.sample(&[4, 3, 3]).unwrap();
        let tb = b.sample(&[4, 3, 3]).unwrap();
        assert_eq!(ta.dims(), &[2, 4, 3, 3]);
        let va = ta.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = tb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(va, vb);
        // Image 1 of seed 7 is image 0 of seed 8.
        let mut c = SeededNoise::new(8, 1, &Device::Cpu, DType::F32);
        let vc = c
            .sample(&[4, 3, 3])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&va[36..], &vc[..]);
        assert_ne!(&va[..36], &vc[..]);
        let mean = va.iter().sum::<f32>() / va.len() as f32;
        assert!(mean.abs() < 0.5);
    }
}
