//! Reproducible noise: every image of a job has its own random stream seeded
//! with `seed + index`, and noise is drawn on the CPU in f32 before moving to
//! the model's device and dtype. Device RNGs differ across backends and
//! launches (Candle's example seeds the device: not reproducible), so they are
//! never used. Three sources ([`Rng`]): ChaCha8 (the default), PyTorch's CPU
//! generator ([`torch_cpu`]), so that a seed gives the picture diffusers gives,
//! and AUTOMATIC1111's NV generator ([`philox`]), so that it gives A1111's.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use sd_worker_sdk::Rng;

use crate::scheduler::NoiseSource;

pub mod philox;
pub mod torch_cpu;

use philox::PhiloxGenerator;
use torch_cpu::TorchCpuGenerator;

/// One image's stream.
enum Stream {
    ChaCha(Box<ChaCha8Rng>),
    TorchCpu(Box<TorchCpuGenerator>),
    Nv(PhiloxGenerator),
}

impl Stream {
    fn new(rng: Rng, seed: u64) -> Self {
        match rng {
            Rng::Chacha => Stream::ChaCha(Box::new(ChaCha8Rng::seed_from_u64(seed))),
            Rng::TorchCpu => Stream::TorchCpu(Box::new(TorchCpuGenerator::new(seed))),
            Rng::Nv => Stream::Nv(PhiloxGenerator::new(seed)),
        }
    }

    /// `count` standard normals in f32: one draw of a tensor of `count`
    /// values (for torch, the values depend on the count, not the shape).
    fn extend(&mut self, count: usize, out: &mut Vec<f32>) {
        match self {
            Stream::ChaCha(rng) => out.extend((0..count).map(|_| {
                let v: f32 = StandardNormal.sample(&mut **rng);
                v
            })),
            Stream::TorchCpu(g) => out.extend(g.randn(count)),
            Stream::Nv(g) => out.extend(g.randn(count)),
        }
    }
}

pub struct SeededNoise {
    rng: Rng,
    streams: Vec<Stream>,
    /// With `nv`: ChaCha streams (seed + i) for the VAE posterior samples, so
    /// that the NV streams' offsets stay A1111's (see [`Self::sample_posterior`]).
    posterior: Option<Vec<Stream>>,
    device: Device,
    dtype: DType,
}

impl SeededNoise {
    /// One ChaCha stream per image, for seeds `seed`, `seed + 1`, ...
    pub fn new(seed: u64, images: usize, device: &Device, dtype: DType) -> Self {
        Self::with_rng(Rng::Chacha, seed, images, device, dtype)
    }

    /// One stream of `rng` per image, for seeds `seed`, `seed + 1`, ... (as
    /// diffusers' pipelines given one `torch.Generator` per image).
    pub fn with_rng(rng: Rng, seed: u64, images: usize, device: &Device, dtype: DType) -> Self {
        Self {
            rng,
            streams: (0..images as u64)
                .map(|i| Stream::new(rng, seed.wrapping_add(i)))
                .collect(),
            posterior: (rng == Rng::Nv).then(|| {
                (0..images as u64)
                    .map(|i| Stream::new(Rng::Chacha, seed.wrapping_add(i)))
                    .collect()
            }),
            device: device.clone(),
            dtype,
        }
    }

    /// Whether an input image's VAE posterior sample is drawn before the
    /// starting noise, as diffusers' image-to-image pipeline does
    /// (`prepare_latents`: `latent_dist.sample(generator)`, then `randn_tensor`).
    /// The ChaCha source keeps the worker's historical order (noise first), so
    /// its images for a seed do not change; so does NV (whose posterior draws
    /// come from other streams: [`Self::sample_posterior`]).
    pub fn posterior_before_noise(&self) -> bool {
        self.rng == Rng::TorchCpu
    }

    /// Standard normal noise of shape [images, ...per_image]: image `i`'s
    /// values are one draw of shape [1, ...per_image] from its own stream.
    pub fn sample(&mut self, per_image: &[usize]) -> candle_core::Result<Tensor> {
        Self::draw(&mut self.streams, per_image, self.dtype, &self.device)
    }

    /// The noise of an input image's VAE posterior sample, shaped as
    /// [`Self::sample`]. From the job's streams, except with `nv`: A1111 samples
    /// the posterior from torch's global generator, not from the NV one, so
    /// that its NV offsets go to the starting noise (0) and the ancestral steps
    /// (1, 2, ...) only; here the posterior takes a ChaCha stream of the same
    /// seed, which keeps those offsets A1111's.
    pub fn sample_posterior(&mut self, per_image: &[usize]) -> candle_core::Result<Tensor> {
        let streams = self.posterior.as_mut().unwrap_or(&mut self.streams);
        Self::draw(streams, per_image, self.dtype, &self.device)
    }

    fn draw(
        streams: &mut [Stream],
        per_image: &[usize],
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let count: usize = per_image.iter().product();
        let mut values = Vec::with_capacity(count * streams.len());
        for stream in streams.iter_mut() {
            stream.extend(count, &mut values);
        }
        let mut shape = vec![streams.len()];
        shape.extend_from_slice(per_image);
        Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

impl NoiseSource for SeededNoise {
    fn sample_like(&mut self, like: &Tensor) -> candle_core::Result<Tensor> {
        let dims = like.dims();
        if dims.first() != Some(&self.streams.len()) {
            candle_core::bail!(
                "noise requested for batch {:?}, but the job has {} images",
                dims.first(),
                self.streams.len()
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

    #[test]
    fn torch_cpu_noise_draws_each_image_from_its_own_torch_generator() {
        let mut noise = SeededNoise::with_rng(Rng::TorchCpu, 41, 2, &Device::Cpu, DType::F32);
        let first = noise.sample(&[4, 3, 3]).unwrap();
        let second = noise.sample(&[4, 3, 3]).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, seed) in [41u64, 42].into_iter().enumerate() {
            let mut g = TorchCpuGenerator::new(seed);
            assert_eq!(&flat(&first)[i * 36..(i + 1) * 36], &g.randn(36)[..]);
            assert_eq!(&flat(&second)[i * 36..(i + 1) * 36], &g.randn(36)[..]);
        }
        assert!(noise.posterior_before_noise());
        assert!(!SeededNoise::new(41, 1, &Device::Cpu, DType::F32).posterior_before_noise());
    }
}
