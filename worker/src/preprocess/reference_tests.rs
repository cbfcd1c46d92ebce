//! The preprocessors against OpenCV 4.13 and numpy, pixel for pixel.
//! `tests/reference/canny_reference.json` was computed by `cv2.Canny`,
//! `cv2.cvtColor(.., COLOR_RGB2GRAY)` and lllyasviel's `HWC3` on images built
//! from integer formulas that this file rebuilds (how to recompute it:
//! `canny_reference.py` beside it).
//!
//! The bound on differing pixels is 0 in every case: our Canny follows OpenCV's integer
//! arithmetic step for step (Sobel in integers, L1 magnitude, fixed-point
//! direction sectors, the same `>`/`>=` comparisons, 8-connected
//! hysteresis), so no pixel may differ. Every map holds over 200 edge pixels,
//! and the colour and grey maps differ from each other by many pixels, so a
//! Canny on grey input fails; so does one with `>` for OpenCV's `>=` on
//! the right-hand neighbour (tried: 1 pixel differs at 100/200).

use image::{DynamicImage, RgbImage, RgbaImage};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{canny_edges, control_rgb, grey_601, scribble};

#[derive(Deserialize)]
struct Case {
    input: String,
    low: u32,
    high: u32,
    rows: Vec<String>,
}

#[derive(Deserialize)]
struct Reference {
    width: u32,
    height: u32,
    image_sha256: String,
    canny: Vec<Case>,
    grey_hex: String,
    scribble_threshold: u32,
    scribble: Vec<String>,
    hwc3_rgba_sha256: String,
    hwc3_hex: String,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("../../tests/reference/canny_reference.json"))
        .expect("canny_reference.json parses")
}

/// The script's `noise`: -8..=8 from a u32 hash of (x, y, channel).
fn noise(x: u32, y: u32, c: u32) -> i32 {
    let h = x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ c.wrapping_mul(83492791);
    (h % 17) as i32 - 8
}

/// The script's `test_image`.
fn test_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (xi, yi) = (x as i32, y as i32);
        let mut rgb = [xi * 4, yi * 5, 128];
        if (8..28).contains(&x) && (6..20).contains(&y) {
            rgb = [220, 40, 40];
        }
        if (xi - 44).pow(2) + (yi - 30).pow(2) <= 121 {
            rgb = [30, 200, 90];
        }
        if x < 3 && (30..40).contains(&y) {
            rgb = [20, 20, 230];
        }
        if (xi - yi - 5).abs() <= 1 {
            rgb = [250, 250, 250];
        }
        let mut px = [0u8; 3];
        for c in 0..3 {
            px[c] = (rgb[c] + noise(x, y, c as u32)).clamp(0, 255) as u8;
        }
        image::Rgb(px)
    })
}

/// The script's `rgba_image`: alpha 16 * y + x, every value once.
fn rgba_image() -> RgbaImage {
    RgbaImage::from_fn(16, 16, |x, y| {
        image::Rgba([
            ((x * 37 + y * 11) % 256) as u8,
            ((x * 5 + y * 90) % 256) as u8,
            ((x * y * 7) % 256) as u8,
            (16 * y + x) as u8,
        ])
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A 0/255 map as the script's rows of '0'/'1'.
fn rows(map: &[u8], width: u32) -> Vec<String> {
    map.chunks(width as usize)
        .map(|r| r.iter().map(|&v| if v > 0 { '1' } else { '0' }).collect())
        .collect()
}

fn differing(a: &[String], b: &[String]) -> usize {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.chars().zip(y.chars()).filter(|(p, q)| p != q).count())
        .sum()
}

fn ones(rows: &[String]) -> usize {
    rows.iter().map(|r| r.matches('1').count()).sum()
}

#[test]
fn the_test_image_and_its_grey_match_opencvs() {
    let r = reference();
    let img = test_image(r.width, r.height);
    assert_eq!(
        sha256_hex(img.as_raw()),
        r.image_sha256,
        "test image formula"
    );
    assert_eq!(grey_601(&img).into_raw(), from_hex(&r.grey_hex));
}

#[test]
fn canny_matches_opencv_pixel_for_pixel() {
    let r = reference();
    let img = test_image(r.width, r.height);
    let grey = grey_601(&img);
    assert_eq!(r.canny.len(), 6);
    for case in &r.canny {
        let ours = match case.input.as_str() {
            "colour" => canny_edges(&img, case.low, case.high),
            "grey" => canny_edges(&grey, case.low, case.high),
            other => panic!("unknown input {other}"),
        };
        let ours = rows(ours.as_raw(), r.width);
        let diff = differing(&ours, &case.rows);
        let edges = ones(&case.rows);
        println!(
            "{} {}/{}: {diff} of {edges} edge pixels differ",
            case.input, case.low, case.high
        );
        assert!(edges > 200, "too few edges to test anything");
        assert!(
            diff == 0,
            "{} {}/{}: {diff} pixels differ from OpenCV\nours:\n{}\nopencv:\n{}",
            case.input,
            case.low,
            case.high,
            ours.join("\n"),
            case.rows.join("\n")
        );
    }
    // The colour path matters: Canny on grey gives another map.
    let colour = &r.canny[0];
    let grey_case = r
        .canny
        .iter()
        .find(|c| c.input == "grey" && (c.low, c.high) == (colour.low, colour.high))
        .expect("a grey case at the colour case's thresholds");
    assert!(differing(&colour.rows, &grey_case.rows) > 50);
}

#[test]
fn scribble_matches_the_grey_threshold() {
    let r = reference();
    let img = test_image(r.width, r.height);
    let map = scribble(&img, r.scribble_threshold);
    let grey_rows: Vec<u8> = map.as_raw().iter().step_by(3).copied().collect();
    assert_eq!(rows(&grey_rows, r.width), r.scribble);
    let n = ones(&r.scribble);
    assert!(n > 100 && n < (r.width * r.height) as usize - 100);
}

#[test]
fn control_rgb_matches_hwc3_for_every_alpha() {
    let r = reference();
    let rgba = rgba_image();
    assert_eq!(sha256_hex(rgba.as_raw()), r.hwc3_rgba_sha256);
    let ours = control_rgb(&DynamicImage::ImageRgba8(rgba));
    assert_eq!(ours.into_raw(), from_hex(&r.hwc3_hex));
}
