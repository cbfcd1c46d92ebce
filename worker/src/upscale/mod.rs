//! Model upscalers of the ESRGAN family: ESRGAN / Real-ESRGAN RRDBNet (every
//! key layout in the wild) and Real-ESRGAN's compact SRVGGNet, detected from
//! the weights as spandrel 0.4.2 (the library ComfyUI uses) detects them, run
//! in Candle, whole or in overlapping tiles.
//!
//! [`Upscaler::load`] reads the file ([`load`]: `.safetensors`, or `.pth`
//! through Candle's pickle reader, which never runs code), detects the
//! architecture ([`arch::detect`]) and builds the network ([`rrdbnet`],
//! [`srvgg`]). [`Upscaler::forward`] behaves as spandrel's
//! `ImageModelDescriptor.__call__`; [`Upscaler::upscale_tiled`] bounds memory
//! by the tile size.

pub mod arch;
pub mod generate;
pub mod job;
pub mod load;
pub mod registry;
pub mod rrdbnet;
pub mod srvgg;
pub mod tile;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

pub use arch::{CompactConfig, EsrganLayout, RrdbConfig, UpscalerArch};
pub use generate::generate;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;

enum Net {
    Rrdb(Box<rrdbnet::RrdbNet>),
    Compact(srvgg::SrvggNet),
}

/// A loaded upscaler.
pub struct Upscaler {
    arch: UpscalerArch,
    net: Net,
    device: Device,
    dtype: DType,
    params: usize,
}

impl Upscaler {
    /// Loads `path` (`.safetensors`, `.pth` / `.pt`) onto `device` in f32.
    /// A `.pth` is read only through Candle's pickle reader, which takes the
    /// tensors out as data and never executes code from the file.
    ///
    /// Errors: see [`load::read_state_dict`] (file type, malformed file) and
    /// [`arch::detect`] (not an upscaler, an unsupported architecture or
    /// variant, each named).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with_dtype(path, device, DType::F32)
    }

    /// [`Upscaler::load`] with the weights and activations in `dtype`
    /// (inputs and outputs stay f32).
    pub fn load_with_dtype(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let tensors = load::read_state_dict(path)?;
        Self::from_tensors(tensors, device, dtype)
            .map_err(|e| e.context(format!("loading upscaler {}", path.display())))
    }

    /// Builds from an unwrapped state dict (any supported key layout).
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let (arch, tensors) = arch::detect(tensors)?;
        let params = tensors.values().map(|t| t.elem_count()).sum();
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let net = match &arch {
            UpscalerArch::Esrgan(c) => Net::Rrdb(Box::new(rrdbnet::RrdbNet::new(c, vb)?)),
            UpscalerArch::Compact(c) => Net::Compact(srvgg::SrvggNet::new(c, vb)?),
        };
        Ok(Self {
            arch,
            net,
            device: device.clone(),
            dtype,
            params,
        })
    }

    /// The detected architecture and its shapes.
    pub fn arch(&self) -> &UpscalerArch {
        &self.arch
    }

    /// "ESRGAN" or "RealESRGAN-compact".
    pub fn arch_name(&self) -> &'static str {
        self.arch.name()
    }

    /// Output side / input side (1, 2, 4, 8).
    pub fn scale(&self) -> usize {
        self.arch.scale()
    }

    /// Number of weights.
    pub fn parameter_count(&self) -> usize {
        self.params
    }

    /// Bytes the weights take on the device.
    pub fn weight_bytes(&self) -> u64 {
        (self.params * self.dtype.size_in_bytes()) as u64
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Sides are padded up to a multiple of this before the network (4 for
    /// pixel-unshuffle models, spandrel's `SizeRequirements(minimum=2,
    /// multiple_of=4)`; 1 otherwise).
    pub fn size_multiple(&self) -> usize {
        self.arch.size_multiple()
    }

    /// Smallest side the network takes before padding (2 for ESRGAN, 1 for compact).
    fn size_minimum(&self) -> usize {
        match (&self.arch, self.size_multiple()) {
            (UpscalerArch::Esrgan(_), 1) => 2,
            (_, m) => m,
        }
    }

    /// The network alone: x [B, C, H, W] (C = the model's input channels,
    /// normally 3) -> [B, C_out, H * scale, W * scale] in f32, unclamped.
    /// Pixel-unshuffle models reflect-pad H and W to multiples of the factor
    /// and crop (the architecture's own `forward`).
    pub fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4().map_err(|_| {
            anyhow::anyhow!("upscaler input must be [B, C, H, W], got {:?}", x.dims())
        })?;
        ensure!(
            c == self.arch.input_channels(),
            "upscaler input has {c} channels, the model takes {}",
            self.arch.input_channels()
        );
        ensure!(h > 0 && w > 0, "upscaler input is empty ({h}x{w})");
        let x = x.to_device(&self.device)?.to_dtype(self.dtype)?;
        let y = match &self.net {
            Net::Rrdb(n) => n.forward(&x)?,
            Net::Compact(n) => n.forward(&x)?,
        };
        Ok(y.to_dtype(DType::F32)?)
    }

    /// Upscales x [B, C, H, W] f32 in [0, 1] -> [B, C_out, H * scale, W *
    /// scale] f32 clamped to [0, 1], on the model's device, as spandrel's
    /// `ImageModelDescriptor.__call__`: sides below the minimum or off the
    /// size multiple are padded at the bottom / right (reflect, then
    /// replicate), the network runs, the output is clamped and cropped.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4().map_err(|_| {
            anyhow::anyhow!("upscaler input must be [B, C, H, W], got {:?}", x.dims())
        })?;
        let (m, min) = (self.size_multiple(), self.size_minimum());
        let target = |n: usize| n.max(min).div_ceil(m) * m;
        let (th, tw) = (target(h), target(w));
        let padded = if (th, tw) != (h, w) {
            rrdbnet::pad_end(&x.to_device(&self.device)?, th - h, tw - w)?
        } else {
            x.clone()
        };
        let y = self.forward_raw(&padded)?.clamp(0f32, 1f32)?;
        let s = self.scale();
        if (th, tw) != (h, w) {
            return Ok(y.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?);
        }
        Ok(y)
    }

    /// Upscales image [1, C, H, W] f32 in [0, 1] tile by tile: the image is
    /// cut into `tile_size` x `tile_size` squares (rounded up to the size
    /// multiple); each is run by [`Upscaler::forward`] with `tile_overlap`
    /// more input pixels on every side that has them, and only its centre is
    /// kept, so the result equals the untiled one wherever the network's
    /// receptive field fits in the overlap. Device memory is bounded by the
    /// tile ([`Upscaler::working_memory_bytes`]); the output [1, C_out,
    /// H * scale, W * scale] f32 in [0, 1] is assembled on the CPU.
    ///
    /// `on_tile(done, total)` is called after each tile; an `Err` it returns
    /// stops the work and is returned (cancellation). `tile_size` 0 runs the
    /// whole image at once (one call of `on_tile`).
    pub fn upscale_tiled(
        &self,
        image: &Tensor,
        tile_size: usize,
        tile_overlap: usize,
        on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Tensor> {
        tile::upscale_tiled(self, image, tile_size, tile_overlap, on_tile)
    }

    /// Device bytes one tile takes beyond the weights (activations of the
    /// largest tile plus its input and output), for an image of `height` x
    /// `width` upscaled with `tile_size` and `tile_overlap` (0: untiled).
    /// See [`tile::activation_bytes`] for the derivation. The CPU holds the
    /// output (C_out x H x W x scale^2 x 4 bytes) besides.
    pub fn working_memory_bytes(
        &self,
        height: usize,
        width: usize,
        tile_size: usize,
        tile_overlap: usize,
    ) -> u64 {
        tile::working_memory_bytes(self, height, width, tile_size, tile_overlap)
    }
}
