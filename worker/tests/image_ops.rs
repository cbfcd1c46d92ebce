//! Image to image and inpainting end to end against the real binary, on the
//! tiny model (4-channel UNet, latent blending) and a tiny inpainting model
//! (9-channel UNet).

mod common;

use base64::Engine as _;
use common::{b64_png, gradient, Msg, Worker};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::OnceLock;

use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;

fn inpainting_model() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("sd-worker-test-inpaint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_model(
            &dir,
            &ModelShape::tiny().inpainting(),
            WeightInit::Seeded(2),
        )
        .unwrap();
        dir
    })
}

/// White (repaint) on the left half.
fn left_half_mask(w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, _| Luma([if x < w / 2 { 255 } else { 0 }]))
}

async fn run(w: &Worker, body: Value) -> (Vec<Msg>, Vec<RgbImage>) {
    let (msgs, images) = w.run_job(body).await;
    let decoded = images
        .iter()
        .map(|png| image::load_from_memory(png).unwrap().to_rgb8())
        .collect();
    (msgs, decoded)
}

fn progress(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.kind() == "progress")
        .map(|m| m.json()["step"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn strength_zero_returns_the_input_and_progress_counts_the_steps_run() {
    let w = Worker::start(&[]).await;
    let input = gradient(64, 48);
    let image = b64_png(DynamicImage::ImageRgb8(input.clone()));
    let (msgs, out) = run(&w, json!({"operation": "image_transform", "prompt": "x", "image": image, "strength": 0.0, "steps": 10})).await;
    assert!(progress(&msgs).is_empty());
    assert_eq!(out[0], input, "strength 0 returns the input unchanged");

    for (steps, strength, expected) in [(10, 0.5, 5), (8, 0.75, 6), (7, 1.0, 7), (20, 0.04, 0)] {
        let (msgs, out) = run(
            &w,
            json!({"operation": "image_transform", "prompt": "x", "image": image, "strength": strength, "steps": steps, "seed": 3}),
        )
        .await;
        assert_eq!(
            progress(&msgs),
            (1..=expected).collect::<Vec<u64>>(),
            "steps {steps} strength {strength}"
        );
        let started = msgs.iter().find(|m| m.kind() == "started").unwrap();
        assert_eq!(started.json()["total"], expected);
        assert_eq!(out[0].dimensions(), (64, 48));
        if expected > 0 {
            assert_ne!(out[0], input, "denoising changed the image");
        }
    }
}

#[tokio::test]
async fn image_to_image_is_deterministic_and_accepts_aliases_and_data_urls() {
    let w = Worker::start(&[]).await;
    let image = b64_png(DynamicImage::ImageRgb8(gradient(64, 64)));
    let a = run(&w, json!({"operation": "image_transform", "prompt": "p", "image": image, "seed": 9, "steps": 4})).await.1;
    let b = run(&w, json!({"operation": "image_transform", "prompt": "p", "init_image": format!("data:image/png;base64,{image}"), "seed": 9, "steps": 4})).await.1;
    let c = run(&w, json!({"operation": "image_transform", "prompt": "p", "input_image": image, "seed": 10, "steps": 4})).await.1;
    assert_eq!(
        a, b,
        "same request and seed, same pixels (whatever the field name)"
    );
    assert_ne!(a, c);
}

#[tokio::test]
async fn output_size_follows_the_input_rounded_to_the_size_multiple() {
    let w = Worker::start(&[]).await;
    let image = b64_png(DynamicImage::ImageRgb8(gradient(70, 50)));
    let (_, out) = run(
        &w,
        json!({"operation": "image_transform", "prompt": "p", "image": image, "steps": 2}),
    )
    .await;
    assert_eq!(out[0].dimensions(), (68, 48));
    // Larger than max_size (128 for the tiny model): scaled down, aspect kept.
    let big = b64_png(DynamicImage::ImageRgb8(gradient(400, 200)));
    let (_, out) = run(
        &w,
        json!({"operation": "image_transform", "prompt": "p", "image": big, "steps": 1}),
    )
    .await;
    assert_eq!(out[0].dimensions(), (128, 64));
    // Explicit sizes win; crop and fit keep the frame.
    for mode in ["crop", "fit", "stretch"] {
        let (_, out) = run(
            &w,
            json!({"operation": "image_transform", "prompt": "p", "image": image, "steps": 1, "width": 32, "height": 64, "resize_mode": mode}),
        )
        .await;
        assert_eq!(out[0].dimensions(), (32, 64), "{mode}");
    }
}

/// Every pixel outside the mask comes back exactly; inside, the model painted.
fn assert_inpainted(input: &RgbImage, mask: &GrayImage, out: &RgbImage) {
    assert_eq!(out.dimensions(), input.dimensions());
    let mut changed = 0;
    for (x, y, p) in out.enumerate_pixels() {
        if mask.get_pixel(x, y)[0] == 0 {
            assert_eq!(p, input.get_pixel(x, y), "kept pixel ({x}, {y}) changed");
        } else if p != input.get_pixel(x, y) {
            changed += 1;
        }
    }
    assert!(changed > 0, "nothing was repainted");
}

#[tokio::test]
async fn inpainting_with_an_ordinary_unet_keeps_every_pixel_outside_the_mask() {
    let w = Worker::start(&[]).await;
    let (iw, ih) = (96, 64);
    let input = gradient(iw, ih);
    let mask = left_half_mask(iw, ih);
    let (msgs, out) = run(
        &w,
        json!({"operation": "image_inpaint", "prompt": "a cat", "image": b64_png(DynamicImage::ImageRgb8(input.clone())),
               "mask": b64_png(DynamicImage::ImageLuma8(mask.clone())), "steps": 5, "num_images": 2, "seed": 1}),
    )
    .await;
    assert_eq!(out.len(), 2);
    assert_eq!(progress(&msgs).len(), 5);
    for img in &out {
        assert_inpainted(&input, &mask, img);
    }
    assert_ne!(out[0], out[1]);
}

#[tokio::test]
async fn a_nine_channel_inpainting_model_inpaints_non_square_batches() {
    let model = inpainting_model().to_str().unwrap().to_string();
    let w = Worker::start_with_model(&model, &[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["inpainting"], true);
    let (iw, ih) = (64, 96);
    let input = gradient(iw, ih);
    let mask = GrayImage::from_fn(iw, ih, |_, y| Luma([if y > 60 { 255 } else { 0 }]));
    // The older field names, as sent by earlier clients.
    let (msgs, out) = run(
        &w,
        json!({"operation": "image_inpaint", "prompt": "a dog", "init_image": b64_png(DynamicImage::ImageRgb8(input.clone())),
               "mask_image": b64_png(DynamicImage::ImageLuma8(mask.clone())), "steps": 4, "num_images": 2, "scheduler": "ddim"}),
    )
    .await;
    assert_eq!(progress(&msgs).len(), 4);
    assert_eq!(out.len(), 2);
    for img in &out {
        assert_inpainted(&input, &mask, img);
    }
    // Text to image on an inpainting model repaints everything.
    let (_, out) = run(&w, json!({"operation": "image_generation", "prompt": "a dog", "steps": 2, "width": 64, "height": 32})).await;
    assert_eq!(out[0].dimensions(), (64, 32));
}

#[tokio::test]
async fn transparency_masks_blur_feathers_and_fit_outpaints() {
    let w = Worker::start(&[]).await;
    // No mask: the transparent right part of the image is repainted.
    let rgba = RgbaImage::from_fn(64, 64, |x, y| {
        let Rgb([r, g, b]) = *gradient(64, 64).get_pixel(x, y);
        Rgba([r, g, b, if x >= 40 { 0 } else { 255 }])
    });
    let keep = GrayImage::from_fn(64, 64, |x, _| Luma([if x >= 40 { 255 } else { 0 }]));
    let (_, out) = run(&w, json!({"operation": "image_inpaint", "prompt": "p", "image": b64_png(DynamicImage::ImageRgba8(rgba.clone())), "steps": 3})).await;
    assert_inpainted(&DynamicImage::ImageRgba8(rgba).to_rgb8(), &keep, &out[0]);

    // mask_blur feathers the seam: pixels far from the mask are still exact, the seam is mixed.
    let input = gradient(64, 64);
    let mask = left_half_mask(64, 64);
    let body = |blur: u32| {
        json!({"operation": "image_inpaint", "prompt": "p", "image": b64_png(DynamicImage::ImageRgb8(input.clone())),
               "mask": b64_png(DynamicImage::ImageLuma8(mask.clone())), "steps": 3, "seed": 4, "mask_blur": blur})
    };
    let sharp = run(&w, body(0)).await.1.remove(0);
    let soft = run(&w, body(8)).await.1.remove(0);
    assert_eq!(sharp.get_pixel(34, 10), input.get_pixel(34, 10));
    assert_ne!(
        soft.get_pixel(34, 10),
        input.get_pixel(34, 10),
        "the seam is feathered outside the mask"
    );
    assert_eq!(
        soft.get_pixel(63, 10),
        input.get_pixel(63, 10),
        "far from the mask nothing changes"
    );

    // Fit into a wider frame: the new borders are repainted (outpainting), the image kept.
    let square = gradient(32, 32);
    let (_, out) = run(
        &w,
        json!({"operation": "image_inpaint", "prompt": "p", "image": b64_png(DynamicImage::ImageRgb8(square)),
               "mask": b64_png(DynamicImage::ImageLuma8(GrayImage::new(32, 32))), "width": 64, "height": 32,
               "resize_mode": "fit", "steps": 2}),
    )
    .await;
    assert_eq!(out[0].dimensions(), (64, 32));
    assert_ne!(
        out[0].get_pixel(2, 16).0,
        [0, 0, 0],
        "the black border was painted over"
    );
}

#[tokio::test]
async fn bad_image_inputs_get_their_status_and_field() {
    let w = Worker::start(&["--max-input-pixels", "10000"]).await;
    let png = b64_png(DynamicImage::ImageRgb8(gradient(64, 64)));
    let big = b64_png(DynamicImage::ImageRgb8(gradient(128, 128)));
    let mask = b64_png(DynamicImage::ImageLuma8(left_half_mask(64, 64)));
    let gif =
        base64::engine::general_purpose::STANDARD.encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let t = |extra: Value| {
        let mut b = json!({"operation": "image_transform", "prompt": "p", "steps": 1});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b.to_string()
    };
    let i = |extra: Value| {
        let mut b = json!({"operation": "image_inpaint", "prompt": "p", "steps": 1});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b.to_string()
    };
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (t(json!({})), 422, "missing_field", "image"),
        (
            t(json!({"image": "%%% not base64"})),
            400,
            "invalid_image",
            "image",
        ),
        (
            t(
                json!({"image": base64::engine::general_purpose::STANDARD.encode(b"hello, not an image")}),
            ),
            400,
            "invalid_image",
            "image",
        ),
        (t(json!({"image": gif})), 400, "invalid_image", "image"),
        (
            t(json!({"image": "data:image/png;base64"})),
            400,
            "invalid_image",
            "image",
        ),
        (t(json!({"image": big})), 413, "payload_too_large", "image"),
        (
            t(json!({"image": png, "strength": 1.5})),
            422,
            "invalid_value",
            "strength",
        ),
        (
            t(json!({"image": png, "strength": -0.1})),
            422,
            "invalid_value",
            "strength",
        ),
        (
            t(json!({"image": png, "mask": mask})),
            422,
            "invalid_value",
            "mask",
        ),
        (
            t(json!({"image": png, "resize_mode": "squash"})),
            422,
            "invalid_value",
            "resize_mode",
        ),
        (
            t(json!({"image": png, "init_image": png})),
            400,
            "invalid_request",
            "image",
        ),
        (t(json!({"image": 17})), 422, "invalid_value", "image"),
        (i(json!({"image": png})), 422, "missing_field", "mask"),
        (
            i(json!({"image": png, "mask": "###"})),
            400,
            "invalid_image",
            "mask",
        ),
        (
            i(json!({"image": png, "mask": big})),
            413,
            "payload_too_large",
            "mask",
        ),
        (
            i(json!({"image": png, "mask": mask, "mask_blur": 65})),
            422,
            "invalid_value",
            "mask_blur",
        ),
        (
            json!({"operation": "image_generation", "prompt": "p", "image": png}).to_string(),
            422,
            "invalid_value",
            "image",
        ),
    ];
    for (body, status, code, field) in &cases {
        let (got, _, json) = w.submit_raw(body.clone()).await;
        assert_eq!(got, *status, "status for {body:.120}: {json}");
        assert_eq!(json["error"]["code"], *code, "code for {body:.120}: {json}");
        assert_eq!(
            json["error"]["field"], *field,
            "field for {body:.120}: {json}"
        );
    }
    // The worker is unharmed.
    let (_, out) = run(
        &w,
        json!({"operation": "image_transform", "prompt": "p", "image": png, "steps": 1}),
    )
    .await;
    assert_eq!(out[0].dimensions(), (64, 64));
}
