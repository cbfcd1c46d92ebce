//! The input-image paths of image_transform / image_inpaint against the real
//! binary: lopsided inputs stay within a memory bound, EXIF orientation is
//! applied, and RGBA masks use their alpha channel as AUTOMATIC1111 does.

mod common;

use base64::Engine as _;
use common::{b64_png, gradient, Msg, Worker};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`: peak resident set size).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at `state`.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn decoded(png: &[u8]) -> RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

/// Reads a submitted job to its end; its images, or a panic naming `label`.
async fn finish(w: &Worker, job: &Value, label: &str) -> Vec<RgbImage> {
    let msgs = w.stream_all(job["job_id"].as_str().unwrap(), None).await;
    let complete = msgs
        .iter()
        .find(|m| m.kind() == "complete")
        .unwrap_or_else(|| panic!("{label}: no complete event: {msgs:?}"));
    assert_eq!(msgs.last(), Some(&Msg::Done));
    complete.json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| decoded(&common::decode_b64(i["image"].as_str().unwrap())))
        .collect()
}

/// Peak RSS allowed over the baseline while the lopsided inputs are handled.
/// The whole input set decodes to a few MiB; the old cover-then-crop path
/// allocated 1.7 GB for 100000x1 and aborted the process for 1000000x1.
const RSS_BOUND_MIB: u64 = 300;

/// CPU time allowed for the worker while it handles them and the bystander
/// (about 4 s measured; each lopsided input took 10-25 s before).
const CPU_BOUND_S: f64 = 30.0;

#[tokio::test]
async fn lopsided_images_and_masks_complete_within_a_memory_bound_beside_a_bystander() {
    let w = Worker::start(&[]).await;
    let pid = w.pid();
    let small = b64_png(DynamicImage::ImageRgb8(gradient(64, 64)));
    let half = |w: u32, h: u32| {
        b64_png(DynamicImage::ImageLuma8(GrayImage::from_fn(
            w,
            h,
            |x, y| Luma([if x >= w / 2 || y >= h / 2 { 255 } else { 0 }]),
        )))
    };
    // Warm up both operations at the output size used below, so the model's
    // working memory is part of the baseline.
    for op in ["image_transform", "image_inpaint"] {
        let job = w
            .submit(json!({"operation": op, "prompt": "p", "image": small, "mask": if op == "image_inpaint" { Value::from(half(64, 64)) } else { Value::Null },
                           "steps": 1, "width": 128, "height": 128}))
            .await;
        finish(&w, &job, op).await;
    }
    let before_kib = status_kib(pid, "VmHWM");
    let cpu_before = cpu_seconds(pid);

    let bystander = w
        .submit(json!({"operation": "image_generation", "prompt": "a bystander", "steps": 12, "width": 128, "height": 128, "seed": 5}))
        .await;

    let mut cases: Vec<(String, Value)> = Vec::new();
    for (iw, ih) in [(1_000_000, 1), (1, 1_000_000), (100_000, 1), (1, 100_000)] {
        let image = b64_png(DynamicImage::ImageRgb8(gradient(iw, ih)));
        for mode in ["crop", "fit", "stretch"] {
            cases.push((
                format!("{iw}x{ih} {mode}"),
                json!({"operation": "image_transform", "prompt": "p", "image": image, "resize_mode": mode,
                       "width": 128, "height": 128, "steps": 1}),
            ));
        }
    }
    for (iw, ih) in [(100_000, 1), (1, 100_000)] {
        let image = b64_png(DynamicImage::ImageRgb8(gradient(iw, ih)));
        // No explicit size: the output follows the lopsided aspect ratio, clamped.
        cases.push((
            format!("{iw}x{ih} default size"),
            json!({"operation": "image_transform", "prompt": "p", "image": image, "steps": 1}),
        ));
        let mask = half(iw, ih);
        for mode in ["crop", "fit", "stretch"] {
            cases.push((
                format!("{iw}x{ih} mask {mode}"),
                json!({"operation": "image_inpaint", "prompt": "p", "image": small, "mask": mask, "resize_mode": mode,
                       "width": 64, "height": 96, "steps": 1}),
            ));
        }
    }
    // Outpainting a lopsided image whose transparency is the mask.
    let see_through =
        RgbaImage::from_fn(1_000_000, 1, |x, _| Rgba([9, 99, 199, (x % 2 * 255) as u8]));
    cases.push((
        "1000000x1 transparent fit inpaint".into(),
        json!({"operation": "image_inpaint", "prompt": "p", "image": b64_png(DynamicImage::ImageRgba8(see_through)),
               "resize_mode": "fit", "width": 128, "height": 64, "steps": 1}),
    ));
    let mut accepted = 0;
    for (label, body) in &cases {
        let (status, _, reply) = w.submit_raw(body.to_string()).await;
        if status == 202 {
            accepted += 1;
            let out = finish(&w, &reply, label).await;
            let expected = (
                body["width"].as_u64().unwrap_or(0) as u32,
                body["height"].as_u64().unwrap_or(0) as u32,
            );
            if expected != (0, 0) {
                assert_eq!(out[0].dimensions(), expected, "{label}");
            }
        } else {
            assert!((400..500).contains(&status), "{label}: {status} {reply}");
            assert!(
                ["image", "mask"].contains(&reply["error"]["field"].as_str().unwrap_or("")),
                "{label}: {reply}"
            );
        }
    }
    let out = finish(&w, &bystander, "bystander").await;
    assert_eq!(out[0].dimensions(), (128, 128));

    let peak_kib = status_kib(pid, "VmHWM");
    let cpu = cpu_seconds(pid) - cpu_before;
    eprintln!(
        "{accepted}/{} lopsided jobs accepted; worker VmHWM {} MiB before, {} MiB after; {cpu:.1} s CPU",
        cases.len(),
        before_kib / 1024,
        peak_kib / 1024
    );
    assert!(
        cpu < CPU_BOUND_S,
        "the lopsided jobs and the bystander took {cpu:.1} s of CPU (bound {CPU_BOUND_S} s)"
    );
    assert!(
        peak_kib.saturating_sub(before_kib) < RSS_BOUND_MIB * 1024,
        "peak RSS grew from {} MiB to {} MiB (bound +{RSS_BOUND_MIB} MiB)",
        before_kib / 1024,
        peak_kib / 1024
    );
}

/// A baseline JPEG of `img` with an EXIF APP1 segment saying `orientation`
/// inserted right after SOI, as a phone camera writes it.
fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(img)
        .unwrap();
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let mut tiff = b"II*\0\x08\0\0\0".to_vec(); // little-endian TIFF, IFD0 at offset 8
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    jpeg.splice(2..2, app1);
    jpeg
}

fn is_reddish(p: &Rgb<u8>) -> bool {
    p[0] > 150 && p[2] < 100
}

fn is_bluish(p: &Rgb<u8>) -> bool {
    p[2] > 150 && p[0] < 100
}

#[tokio::test]
async fn a_jpeg_with_exif_orientation_6_is_turned_upright_before_sizing_and_masking() {
    let w = Worker::start(&[]).await;
    // Stored 64x32 sideways: red left half, blue right half. Orientation 6
    // (rotate 90 degrees clockwise to display) makes it 32x64, red on top.
    let stored = RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            Rgb([220, 30, 30])
        } else {
            Rgb([30, 30, 220])
        }
    });
    let jpeg = b64(&jpeg_with_orientation(&stored, 6));
    let (_, images) = w
        .run_job(
            json!({"operation": "image_transform", "prompt": "p", "image": jpeg, "strength": 0.0}),
        )
        .await;
    let out = decoded(&images[0]);
    assert_eq!(
        out.dimensions(),
        (32, 64),
        "the default size is the upright size"
    );
    for x in [2, 16, 29] {
        for y in [2, 20, 29] {
            assert!(
                is_reddish(out.get_pixel(x, y)),
                "({x}, {y}) is red: {:?}",
                out.get_pixel(x, y)
            );
        }
        for y in [34, 44, 61] {
            assert!(
                is_bluish(out.get_pixel(x, y)),
                "({x}, {y}) is blue: {:?}",
                out.get_pixel(x, y)
            );
        }
    }

    // The mask is turned upright too: stored 64x32 with its left half white,
    // upright it repaints the top half of a 32x64 image.
    let mask = RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    });
    let input = gradient(32, 64);
    let (_, images) = w
        .run_job(json!({"operation": "image_inpaint", "prompt": "p", "image": b64_png(DynamicImage::ImageRgb8(input.clone())),
                        "mask": b64(&jpeg_with_orientation(&mask, 6)), "steps": 3, "seed": 2}))
        .await;
    let out = decoded(&images[0]);
    assert_eq!(out.dimensions(), (32, 64));
    let mut changed_top = 0;
    for (x, y, p) in out.enumerate_pixels() {
        if y >= 32 {
            assert_eq!(p, input.get_pixel(x, y), "kept pixel ({x}, {y}) changed");
        } else if p != input.get_pixel(x, y) {
            changed_top += 1;
        }
    }
    assert!(
        changed_top > 32 * 32 / 2,
        "the top half was repainted ({changed_top} pixels changed)"
    );
}

#[tokio::test]
async fn an_rgba_mask_with_a_transparent_background_repaints_its_opaque_strokes() {
    let w = Worker::start(&[]).await;
    let input = gradient(64, 64);
    // A mask painted in an editor: transparent background, opaque black strokes
    // over the right half. Its alpha channel is the mask (luminance is 0 everywhere).
    let mask = RgbaImage::from_fn(64, 64, |x, _| {
        if x >= 32 {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let (_, images) = w
        .run_job(json!({"operation": "image_inpaint", "prompt": "p", "image": b64_png(DynamicImage::ImageRgb8(input.clone())),
                        "mask": b64_png(DynamicImage::ImageRgba8(mask)), "steps": 3, "seed": 6}))
        .await;
    let out = decoded(&images[0]);
    let mut changed_right = 0;
    for (x, y, p) in out.enumerate_pixels() {
        if x < 32 {
            assert_eq!(p, input.get_pixel(x, y), "kept pixel ({x}, {y}) changed");
        } else if p != input.get_pixel(x, y) {
            changed_right += 1;
        }
    }
    assert!(
        changed_right > 32 * 64 / 2,
        "the strokes were repainted ({changed_right} pixels changed)"
    );
}
