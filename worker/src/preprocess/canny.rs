//! Canny edges as OpenCV's `cv2.Canny(img, low, high)` computes them with its
//! defaults (Sobel aperture 3, `L2gradient=False`), which is how A1111's
//! ControlNet extension and lllyasviel's annotator make the maps the canny
//! ControlNets were trained on: on the RGB uint8 image itself, no blur first.
//!
//! Why not `imageproc::edges::canny`: it blurs with a Gaussian (sigma 1.4)
//! first, takes grey input only, thresholds the L2 norm of the gradient with
//! `>=`, skips the border pixels and follows weak edges through 6 of the 8
//! neighbours, so its maps differ from OpenCV's on most edges. The algorithm
//! is small; this module writes it once, checked pixel for pixel against
//! OpenCV 4.13 (`tests/reference/canny_reference.py`).
//!
//! The steps, as OpenCV's `modules/imgproc/src/canny.cpp` defines them:
//! 1. Per channel, the 3x3 Sobel derivatives `dx` (right minus left) and `dy`
//!    (below minus above), the image's border replicated, in integers.
//! 2. Per pixel, the channel with the largest `|dx| + |dy|` (the first one on
//!    ties, so channel order matters: R, G, B as A1111 hands it) gives the
//!    pixel's magnitude `m` and direction.
//! 3. Non-maximum suppression along the direction quantised to 0, 45, 90 or
//!    135 degrees by fixed-point tangents (tan 22.5 in 15 bits), comparing
//!    with `>` on one side and `>=` on the other (strictly on both sides on
//!    diagonals); magnitudes outside the image count as 0. Only pixels with
//!    `m > low` are considered.
//! 4. Hysteresis: survivors with `m > high` are edges, and so is every
//!    survivor 8-connected to an edge through survivors.

use image::{GrayImage, ImageBuffer, Pixel, RgbImage};
use sd_worker_sdk::{PreprocessParams, PreprocessorName};

use super::{canny_thresholds, grey_to_rgb, Preprocessor};

/// `tan(22.5 degrees)` in 15-bit fixed point, rounded (OpenCV's `TG22`).
const TG22: i32 = 13573;
const SHIFT: u32 = 15;

/// Map cell states during the pass (OpenCV's 0, 1, 2).
const MAYBE: u8 = 0;
const NOT: u8 = 1;
const EDGE: u8 = 2;

/// The `canny` preprocessor: [`canny_edges`] with the request's thresholds
/// (100 and 200 when absent), as white edges on black in all three channels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Canny;

impl Preprocessor for Canny {
    fn name(&self) -> PreprocessorName {
        PreprocessorName::Canny
    }

    fn run(&self, image: &RgbImage, params: &PreprocessParams) -> anyhow::Result<RgbImage> {
        let (low, high) = canny_thresholds(params);
        Ok(grey_to_rgb(&canny_edges(image, low, high)))
    }
}

/// Gradients of one image row after the channel choice: `dx`, `dy` per
/// pixel, and the L1 magnitude with one zero on either side (`mag[x + 1]`
/// is pixel `x`), so that neighbours outside the image read 0.
struct Row {
    dx: Vec<i16>,
    dy: Vec<i16>,
    mag: Vec<i32>,
}

impl Row {
    fn zeros(width: usize) -> Self {
        Row {
            dx: vec![0; width],
            dy: vec![0; width],
            mag: vec![0; width + 2],
        }
    }
}

/// Canny edges of an 8-bit image with any number of channels (grey, RGB):
/// 255 on edges, 0 elsewhere, the same size as `image`. `low` and `high` are
/// the hysteresis thresholds on the L1 Sobel magnitude (0..=2040 per channel
/// is the magnitude's range); as OpenCV, they are swapped if `low > high`.
///
/// Memory: the output, a `(w + 2) x (h + 2)` byte map, three rows of
/// gradients and a stack of at most one entry per pixel: O(pixels).
pub fn canny_edges<P>(image: &ImageBuffer<P, Vec<u8>>, low: u32, high: u32) -> GrayImage
where
    P: Pixel<Subpixel = u8>,
{
    let (w32, h32) = image.dimensions();
    let mut out = GrayImage::new(w32, h32);
    let (w, h) = (w32 as usize, h32 as usize);
    if w == 0 || h == 0 {
        return out;
    }
    let cn = usize::from(P::CHANNEL_COUNT);
    let src: &[u8] = image.as_raw();
    let clamp = |t: u32| i32::try_from(t).unwrap_or(i32::MAX);
    let (low, high) = (clamp(low.min(high)), clamp(low.max(high)));

    let step = w + 2;
    let mut map = vec![NOT; step * (h + 2)];
    let mut stack: Vec<usize> = Vec::new();

    // rows[0], rows[1], rows[2]: the rows above, at and below `y`.
    let mut rows = [Row::zeros(w), Row::zeros(w), Row::zeros(w)];
    gradient_row(src, w, h, cn, 0, &mut rows[1]);
    for y in 0..h {
        if y + 1 < h {
            gradient_row(src, w, h, cn, y + 1, &mut rows[2]);
        } else {
            rows[2].mag.fill(0);
        }
        let [above, at, below] = &rows;
        let map_row = (y + 1) * step + 1;
        for x in 0..w {
            let m = at.mag[x + 1];
            if m > low && is_local_max(m, x, above, at, below) {
                let cell = map_row + x;
                if m > high {
                    map[cell] = EDGE;
                    stack.push(cell);
                } else {
                    map[cell] = MAYBE;
                }
            }
        }
        rows.rotate_left(1);
    }

    // Hysteresis: the border cells are NOT, so every neighbour index of an
    // interior cell lies inside `map`.
    while let Some(cell) = stack.pop() {
        for n in [
            cell - step - 1,
            cell - step,
            cell - step + 1,
            cell - 1,
            cell + 1,
            cell + step - 1,
            cell + step,
            cell + step + 1,
        ] {
            if map[n] == MAYBE {
                map[n] = EDGE;
                stack.push(n);
            }
        }
    }

    for (y, out_row) in out.chunks_exact_mut(w).enumerate() {
        let map_row = &map[(y + 1) * step + 1..][..w];
        for (o, &cell) in out_row.iter_mut().zip(map_row) {
            *o = if cell == EDGE { 255 } else { 0 };
        }
    }
    out
}

/// Non-maximum suppression at pixel `x` of row `at` (OpenCV's comparisons).
fn is_local_max(m: i32, x: usize, above: &Row, at: &Row, below: &Row) -> bool {
    let (xs, ys) = (i32::from(at.dx[x]), i32::from(at.dy[x]));
    let ax = xs.abs();
    let ay = ys.abs() << SHIFT;
    let tg22x = ax * TG22;
    // Padded indices of pixels x - 1, x, x + 1.
    let (left, mid, right) = (x, x + 1, x + 2);
    if ay < tg22x {
        // Mostly horizontal gradient: compare left and right.
        m > at.mag[left] && m >= at.mag[right]
    } else if ay > tg22x + (ax << (SHIFT + 1)) {
        // Mostly vertical: above and below.
        m > above.mag[mid] && m >= below.mag[mid]
    } else if (xs ^ ys) < 0 {
        // Diagonal, gradient towards up-right or down-left.
        m > above.mag[right] && m > below.mag[left]
    } else {
        // Diagonal, gradient towards down-right or up-left.
        m > above.mag[left] && m > below.mag[right]
    }
}

/// Sobel gradients of row `y` (border replicated), the largest-magnitude
/// channel per pixel, into `row`.
fn gradient_row(src: &[u8], w: usize, h: usize, cn: usize, y: usize, row: &mut Row) {
    let line = |yy: usize| &src[yy * w * cn..(yy + 1) * w * cn];
    let (ra, rb, rc) = (line(y.saturating_sub(1)), line(y), line((y + 1).min(h - 1)));
    for x in 0..w {
        let (xl, xr) = (x.saturating_sub(1) * cn, (x + 1).min(w - 1) * cn);
        let xm = x * cn;
        let mut best = (-1i32, 0i32, 0i32);
        for c in 0..cn {
            let p = |r: &[u8], i: usize| i32::from(r[i + c]);
            let dx =
                (p(ra, xr) - p(ra, xl)) + 2 * (p(rb, xr) - p(rb, xl)) + (p(rc, xr) - p(rc, xl));
            let dy =
                (p(rc, xl) - p(ra, xl)) + 2 * (p(rc, xm) - p(ra, xm)) + (p(rc, xr) - p(ra, xr));
            let m = dx.abs() + dy.abs();
            if m > best.0 {
                best = (m, dx, dy);
            }
        }
        // |dx|, |dy| <= 4 * 255: they fit in i16 as in OpenCV's CV_16S.
        row.mag[x + 1] = best.0;
        row.dx[x] = best.1 as i16;
        row.dy[x] = best.2 as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    #[test]
    fn a_step_gives_one_thin_vertical_edge() {
        let img = GrayImage::from_fn(10, 6, |x, _| Luma([if x < 5 { 0 } else { 200 }]));
        let edges = canny_edges(&img, 100, 200);
        for y in 0..6 {
            let row: Vec<u8> = (0..10).map(|x| edges.get_pixel(x, y)[0]).collect();
            // dx = 800 at x = 4 and x = 5; the left one wins (`>` left, `>=` right).
            assert_eq!(row, [0, 0, 0, 0, 255, 0, 0, 0, 0, 0], "row {y}");
        }
    }

    #[test]
    fn flat_and_empty_images_have_no_edges() {
        let flat = RgbImage::from_pixel(7, 5, Rgb([90, 10, 200]));
        assert!(canny_edges(&flat, 0, 0).iter().all(|&v| v == 0));
        assert_eq!(canny_edges(&RgbImage::new(0, 4), 1, 2).dimensions(), (0, 4));
        let one = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
        assert_eq!(canny_edges(&one, 0, 0).into_raw(), [0]);
    }

    #[test]
    fn swapped_thresholds_act_as_opencv_swaps_them() {
        let img = GrayImage::from_fn(12, 12, |x, y| Luma([((x * 20) ^ (y * 13)) as u8]));
        assert_eq!(canny_edges(&img, 200, 50), canny_edges(&img, 50, 200));
        assert_eq!(canny_edges(&img, u32::MAX, 0).dimensions(), (12, 12));
    }

    #[test]
    fn the_preprocessor_writes_three_equal_channels() {
        let img = RgbImage::from_fn(9, 9, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 0]));
        let params = PreprocessParams {
            preprocessor: Some(PreprocessorName::Canny),
            ..Default::default()
        };
        let map = Canny.run(&img, &params).unwrap();
        let grey = canny_edges(&img, 100, 200);
        assert_eq!(map.dimensions(), img.dimensions());
        for (p, g) in map.pixels().zip(grey.pixels()) {
            assert_eq!(p.0, [g[0]; 3]);
        }
    }
}
