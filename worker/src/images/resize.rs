//! Bringing an input image (or mask) to the output size with bounded memory
//! and time, whatever its aspect ratio.
//!
//! The rule: no buffer is larger than the input or a small multiple of the
//! output, and the work is linear in input + output pixels.
//!
//! 1. The region of the input that `resize_mode` shows is chosen in *input*
//!    coordinates first: `crop` takes the centred input rectangle with the
//!    output's aspect ratio, `fit` and `stretch` take the whole input. Nothing
//!    is ever scaled to *cover* the output and cut afterwards (a 1000000x1
//!    input covering 128x128 would be 128000000x128).
//! 2. Each axis of that region longer than [`REDUCING_GAP`] times its target
//!    length is first shrunk by an integer factor with a box filter (the mean
//!    of each `fx` x `fy` block; one pass, one row of accumulators), as
//!    Pillow's `Image.resize(..., reducing_gap=2.0)` does with `Image.reduce`.
//!    Its output is at most the input's size, and each axis is then shorter
//!    than `2 * REDUCING_GAP` times the target.
//! 3. Lanczos3 (`image::imageops::resize`, as PIL's `LANCZOS` in A1111's
//!    `images.resize_image`) brings the region to the target size. Its
//!    separable intermediate (region width x target height, 16 bytes a pixel
//!    as RGBA f32) is thus under `2 * REDUCING_GAP` = 4 times the target's
//!    pixel count, and its cost is bounded by the target's size.
//!
//! Inputs at most twice the output on each axis go straight to Lanczos3.

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer, Luma, Pixel};
use sd_worker_sdk::ResizeMode;

/// An axis longer than this many times its target is box-reduced by an
/// integer factor before Lanczos3 (Pillow's `reducing_gap`).
pub const REDUCING_GAP: u32 = 2;

/// An 8-bit image of any pixel type (RGBA input, grey mask).
pub type Image8<P> = ImageBuffer<P, Vec<u8>>;

/// A rectangle in pixels: x, y, width, height.
type Rect = (u32, u32, u32, u32);

/// Brings `img` to exactly `width` x `height` following `mode` (A1111's
/// "Just resize" / "Crop and resize" / "Resize and fill" without the fill:
/// `fill` paints the borders of `Fit`). Also returns which output pixels came
/// from no input pixel (the borders of `Fit`), 255 there.
pub fn resize<P>(
    img: &Image8<P>,
    width: u32,
    height: u32,
    mode: ResizeMode,
    fill: P,
) -> (Image8<P>, GrayImage)
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (src, dst) = plan(img.dimensions(), (width, height), mode);
    let (dx, dy, dw, dh) = dst;
    let scaled = resample(img, src, dw, dh);
    if (dw, dh) == (width, height) {
        return (scaled, GrayImage::new(width, height));
    }
    let mut canvas = ImageBuffer::from_pixel(width, height, fill);
    imageops::replace(&mut canvas, &scaled, i64::from(dx), i64::from(dy));
    let uncovered = GrayImage::from_fn(width, height, |x, y| {
        let inside = x >= dx && x < dx + dw && y >= dy && y < dy + dh;
        Luma([if inside { 0 } else { 255 }])
    });
    (canvas, uncovered)
}

/// Which input rectangle is shown, and where it lands in the output.
fn plan((iw, ih): (u32, u32), (w, h): (u32, u32), mode: ResizeMode) -> (Rect, Rect) {
    let whole = (0, 0, iw, ih);
    let frame = (0, 0, w, h);
    let (fw, fh, iwf, ihf) = (f64::from(w), f64::from(h), f64::from(iw), f64::from(ih));
    match mode {
        ResizeMode::Stretch => (whole, frame),
        ResizeMode::Crop => {
            // The cover scale, applied backwards: the output frame in input pixels.
            let scale = f64::max(fw / iwf, fh / ihf);
            let cw = ((fw / scale).round() as u32).clamp(1, iw);
            let ch = ((fh / scale).round() as u32).clamp(1, ih);
            (((iw - cw) / 2, (ih - ch) / 2, cw, ch), frame)
        }
        ResizeMode::Fit => {
            let scale = f64::min(fw / iwf, fh / ihf);
            let sw = ((iwf * scale).round() as u32).clamp(1, w);
            let sh = ((ihf * scale).round() as u32).clamp(1, h);
            (whole, ((w - sw) / 2, (h - sh) / 2, sw, sh))
        }
    }
}

/// The `src` rectangle of `img` scaled to `w` x `h`: box reduction of the
/// axes longer than [`REDUCING_GAP`] times their target, then Lanczos3.
fn resample<P>(img: &Image8<P>, src: Rect, w: u32, h: u32) -> Image8<P>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (x, y, cw, ch) = src;
    let fx = (cw / (REDUCING_GAP * w)).max(1);
    let fy = (ch / (REDUCING_GAP * h)).max(1);
    if fx == 1 && fy == 1 {
        let view = imageops::crop_imm(img, x, y, cw, ch);
        return imageops::resize(&*view, w, h, FilterType::Lanczos3);
    }
    let reduced = box_reduce(img, src, fx, fy);
    imageops::resize(&reduced, w, h, FilterType::Lanczos3)
}

/// The mean of each `fx` x `fy` block of the `src` rectangle (blocks at the
/// right and bottom edges may be smaller): `ceil(w / fx)` x `ceil(h / fy)`.
/// Straight (not premultiplied) alpha, as `imageops::resize` treats it.
fn box_reduce<P>(img: &Image8<P>, src: Rect, fx: u32, fy: u32) -> Image8<P>
where
    P: Pixel<Subpixel = u8>,
{
    let c = usize::from(P::CHANNEL_COUNT);
    let (x0, y0, cw, ch) = src;
    let (ow, oh) = (cw.div_ceil(fx), ch.div_ceil(fy));
    let (fxu, owu) = (fx as usize, ow as usize);
    let stride = img.width() as usize * c;
    let raw = img.as_raw();
    let mut out = Vec::with_capacity(owu * oh as usize * c);
    let mut sums = vec![0u64; owu * c];
    for oy in 0..oh {
        sums.fill(0);
        let rows = (y0 + oy * fy)..(y0 + ch).min(y0 + (oy + 1) * fy);
        let nrows = u64::from(rows.end - rows.start);
        for row in rows {
            let start = row as usize * stride + x0 as usize * c;
            let line = &raw[start..start + cw as usize * c];
            for (i, px) in line.chunks_exact(c).enumerate() {
                let o = (i / fxu) * c;
                for (s, v) in sums[o..o + c].iter_mut().zip(px) {
                    *s += u64::from(*v);
                }
            }
        }
        for ox in 0..ow {
            let n = u64::from(fx.min(cw - ox * fx)) * nrows;
            let o = ox as usize * c;
            out.extend(sums[o..o + c].iter().map(|s| ((s + n / 2) / n) as u8));
        }
    }
    ImageBuffer::from_raw(ow, oh, out).expect("ow * oh * channels bytes were written")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    #[test]
    fn resize_modes_keep_or_fill_the_frame() {
        let img = RgbaImage::from_pixel(40, 20, Rgba([200, 10, 10, 255]));
        let black = Rgba([0, 0, 0, 255]);
        for mode in [ResizeMode::Stretch, ResizeMode::Crop, ResizeMode::Fit] {
            let (out, _) = resize(&img, 32, 32, mode, black);
            assert_eq!(out.dimensions(), (32, 32), "{mode:?}");
        }
        let (fit, uncovered) = resize(&img, 32, 32, ResizeMode::Fit, black);
        // 40x20 fit into 32x32 -> 32x16 centred: rows 0..8 and 24..32 are border.
        assert_eq!(uncovered.get_pixel(0, 0)[0], 255);
        assert_eq!(uncovered.get_pixel(16, 16)[0], 0);
        assert_eq!(fit.get_pixel(16, 16)[0], 200);
        assert_eq!(fit.get_pixel(16, 2)[0], 0);
    }

    #[test]
    fn crop_shows_the_centred_input_rectangle_with_the_output_aspect() {
        assert_eq!(
            plan((40, 20), (32, 32), ResizeMode::Crop).0,
            (10, 0, 20, 20)
        );
        assert_eq!(
            plan((1_000_000, 1), (128, 128), ResizeMode::Crop).0,
            (499_999, 0, 1, 1)
        );
        assert_eq!(
            plan((1, 100_000), (64, 96), ResizeMode::Crop).0,
            (0, 49_999, 1, 2)
        );
        // The middle third of a three-band image, cropped to a square, is the middle band.
        let img = GrayImage::from_fn(300, 100, |x, _| Luma([(x / 100 * 100) as u8]));
        let (out, uncovered) = resize(&img, 50, 50, ResizeMode::Crop, Luma([0]));
        assert!(out.pixels().all(|p| p[0] == 100));
        assert!(uncovered.pixels().all(|p| p[0] == 0));
    }

    #[test]
    fn lopsided_inputs_are_box_reduced_to_the_mean_before_lanczos() {
        let img = GrayImage::from_fn(1_000_000, 1, |x, _| {
            Luma([if x % 2 == 0 { 0 } else { 200 }])
        });
        let (out, _) = resize(&img, 128, 128, ResizeMode::Stretch, Luma([7]));
        assert!(out.pixels().all(|p| (99..=101).contains(&p[0])));
        // Fit: one row in the middle, the rest is border.
        let (out, uncovered) = resize(&img, 128, 128, ResizeMode::Fit, Luma([7]));
        assert!((99..=101).contains(&out.get_pixel(64, 63)[0]));
        assert_eq!(
            (out.get_pixel(64, 64)[0], uncovered.get_pixel(64, 64)[0]),
            (7, 255)
        );
        assert_eq!(uncovered.pixels().filter(|p| p[0] == 0).count(), 128);
        // Partial edge blocks average what they hold.
        let img = GrayImage::from_raw(5, 3, (0..15).map(|v| v * 10).collect()).unwrap();
        let r = box_reduce(&img, (0, 0, 5, 3), 2, 2);
        assert_eq!(r.dimensions(), (3, 2));
        assert_eq!(r.into_raw(), vec![30, 50, 65, 105, 125, 140]);
        let img = GrayImage::from_raw(5, 3, (0..15).map(|v| v * 10).collect()).unwrap();
        let r = box_reduce(&img, (1, 1, 4, 2), 4, 1);
        assert_eq!(r.into_raw(), vec![75, 125]);
    }
}
