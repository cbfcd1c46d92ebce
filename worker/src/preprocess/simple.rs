//! The per-pixel preprocessors: `invert` and `scribble`, and the grey
//! conversion `scribble` uses.

use image::{GrayImage, RgbImage};
use sd_worker_sdk::{PreprocessParams, PreprocessorName};

use super::{scribble_threshold, Preprocessor};

/// The `invert` preprocessor: `255 - v` in every channel (A1111's ControlNet
/// `invert` module, "from white bg & black line"): black lines on white
/// become white lines on black.
#[derive(Debug, Clone, Copy, Default)]
pub struct Invert;

impl Preprocessor for Invert {
    fn name(&self) -> PreprocessorName {
        PreprocessorName::Invert
    }

    fn run(&self, image: &RgbImage, _params: &PreprocessParams) -> anyhow::Result<RgbImage> {
        Ok(invert(image))
    }
}

/// `255 - v` in every channel, the same size as `image`.
pub fn invert(image: &RgbImage) -> RgbImage {
    let mut out = image.clone();
    for v in out.iter_mut() {
        *v = 255 - *v;
    }
    out
}

/// The `scribble` preprocessor: [`scribble`] at the request's `threshold`
/// (128 when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scribble;

impl Preprocessor for Scribble {
    fn name(&self) -> PreprocessorName {
        PreprocessorName::Scribble
    }

    fn run(&self, image: &RgbImage, params: &PreprocessParams) -> anyhow::Result<RgbImage> {
        Ok(scribble(image, scribble_threshold(params)))
    }
}

/// Dark strokes on a light background into white strokes on black: a pixel
/// whose [`grey_601`] value is below `threshold` becomes (255, 255, 255),
/// any other (0, 0, 0). `threshold` 0 gives an all-black map; 256 and above
/// an all-white one. This is OpenCV's
/// `cv2.threshold(grey, threshold - 1, 255, cv2.THRESH_BINARY_INV)` on
/// `cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)`, A1111's `threshold` module.
pub fn scribble(image: &RgbImage, threshold: u32) -> RgbImage {
    let mut out = RgbImage::new(image.width(), image.height());
    for (o, p) in out.pixels_mut().zip(image.pixels()) {
        let v = if u32::from(grey_of(p.0)) < threshold {
            255
        } else {
            0
        };
        o.0 = [v; 3];
    }
    out
}

/// Grey by ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) exactly as
/// OpenCV's `cvtColor(.., COLOR_RGB2GRAY)` computes it on 8 bits:
/// `(9798 R + 19235 G + 3735 B + 16384) >> 15` (checked on all 2^24
/// colours by `tests/reference/canny_reference.py`). Not `image`'s
/// `to_luma8`, which weighs by Rec. 709 and truncates.
pub fn grey_601(image: &RgbImage) -> GrayImage {
    let mut out = GrayImage::new(image.width(), image.height());
    for (o, p) in out.pixels_mut().zip(image.pixels()) {
        o.0 = [grey_of(p.0)];
    }
    out
}

fn grey_of([r, g, b]: [u8; 3]) -> u8 {
    let v = 9798 * u32::from(r) + 19235 * u32::from(g) + 3735 * u32::from(b) + 16384;
    // At most (32768 * 255 + 16384) >> 15 = 255.
    (v >> 15) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn sample() -> RgbImage {
        RgbImage::from_fn(5, 3, |x, y| {
            Rgb([(x * 60) as u8, (y * 120) as u8, (x * y * 20) as u8])
        })
    }

    #[test]
    fn invert_is_255_minus_every_value_and_undoes_itself() {
        let img = sample();
        let inv = invert(&img);
        assert_eq!(inv.dimensions(), img.dimensions());
        for (a, b) in img.iter().zip(inv.iter()) {
            assert_eq!(u16::from(*a) + u16::from(*b), 255);
        }
        assert_eq!(invert(&inv), img);
        assert_eq!(Invert.run(&img, &PreprocessParams::default()).unwrap(), inv);
    }

    #[test]
    fn grey_follows_bt601_with_rounding() {
        let img = RgbImage::from_vec(
            5,
            1,
            vec![255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255],
        )
        .unwrap();
        // 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1.
        assert_eq!(grey_601(&img).into_raw(), [255, 0, 76, 150, 29]);
    }

    #[test]
    fn scribble_marks_pixels_strictly_darker_than_the_threshold() {
        // Greys 127, 128, 129.
        let img = RgbImage::from_fn(3, 1, |x, _| Rgb([127 + x as u8; 3]));
        let at = |t| -> Vec<u8> { scribble(&img, t).into_raw() };
        assert_eq!(at(128), [255, 255, 255, 0, 0, 0, 0, 0, 0]);
        assert_eq!(at(129), [255, 255, 255, 255, 255, 255, 0, 0, 0]);
        assert!(at(0).iter().all(|&v| v == 0));
        assert!(at(256).iter().all(|&v| v == 255));
    }

    #[test]
    fn scribble_defaults_to_128() {
        let img = sample();
        let params = PreprocessParams {
            preprocessor: Some(PreprocessorName::Scribble),
            ..Default::default()
        };
        assert_eq!(Scribble.run(&img, &params).unwrap(), scribble(&img, 128));
        let params = PreprocessParams {
            threshold: Some(40),
            ..params
        };
        assert_eq!(Scribble.run(&img, &params).unwrap(), scribble(&img, 40));
    }
}
