//! Live previews without the VAE: a fixed linear map from the 4 latent channels
//! of SD 1.x/2.x to RGB (the widely used approximation also found in ComfyUI
//! and AUTOMATIC1111), applied to the scheduler-scaled latents, JPEG-encoded at
//! latent resolution. Costs microseconds instead of a VAE decode.

use candle_core::{DType, Device, IndexOp, Tensor};

use super::encode::encode_jpeg;

/// Rows: latent channels; columns: R, G, B.
const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// JPEG preview of the first image of `latents` ([batch, channels, h, w]).
pub fn preview_jpeg(latents: &Tensor) -> anyhow::Result<Vec<u8>> {
    let first = latents
        .i(0)?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?;
    let (channels, h, w) = first.dims3()?;
    let flat = first.reshape((channels, h * w))?.t()?; // [h*w, channels]
    let rgb = if channels == 4 {
        let factors = Tensor::new(&SD_LATENT_RGB, &Device::Cpu)?;
        flat.contiguous()?.matmul(&factors)?
    } else {
        // Unknown latent space: show the first three channels.
        flat.narrow(1, 0, channels.min(3))?.contiguous()?
    };
    let rgb = ((rgb + 1.0)? * 127.5)?.clamp(0.0, 255.0)?;
    let values = rgb.flatten_all()?.to_vec1::<f32>()?;
    let per_pixel = values.len() / (h * w);
    let mut bytes = Vec::with_capacity(h * w * 3);
    for px in values.chunks(per_pixel) {
        for c in 0..3 {
            bytes.push(px.get(c).copied().unwrap_or(0.0).round() as u8);
        }
    }
    encode_jpeg(&bytes, w as u32, h as u32, 75)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_decode_at_latent_size() {
        let latents = Tensor::randn(0f32, 1.0, (2, 4, 6, 10), &Device::Cpu).unwrap();
        let jpeg = preview_jpeg(&latents).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (10, 6));
    }
}
