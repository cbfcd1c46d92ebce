//! End to end on the bundled default model (`sd-demo-shapes`): the real
//! worker binary, started with no model flag, is asked over HTTP for a few
//! prompts, and each PNG's pixels must show the background colour, the shape
//! colour and the position the prompt names. Tolerant by design (colour names
//! and position ranges, not bytes), but any break in the pipeline (tokenizer,
//! text encoder, UNet, scheduler, VAE scale, decoding) turns the picture into
//! something else and fails it.

mod common;

use common::Worker;
use serde_json::json;

/// The training palette (training/dataset.py): a colour is named by the nearest entry.
const PALETTE: &[(&str, [f32; 3])] = &[
    ("red", [220.0, 30.0, 30.0]),
    ("green", [30.0, 170.0, 50.0]),
    ("blue", [30.0, 60.0, 220.0]),
    ("yellow", [240.0, 220.0, 30.0]),
    ("purple", [130.0, 40.0, 170.0]),
    ("orange", [245.0, 140.0, 20.0]),
    ("pink", [245.0, 130.0, 190.0]),
    ("cyan", [30.0, 210.0, 220.0]),
    ("white", [245.0, 245.0, 245.0]),
    ("black", [20.0, 20.0, 20.0]),
    ("gray", [128.0, 128.0, 128.0]),
    ("brown", [130.0, 80.0, 30.0]),
];

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn name(rgb: [f32; 3]) -> &'static str {
    PALETTE
        .iter()
        .min_by(|a, b| dist(a.1, rgb).total_cmp(&dist(b.1, rgb)))
        .unwrap()
        .0
}

/// Per-channel median.
fn median(pixels: &[[f32; 3]]) -> [f32; 3] {
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let mut v: Vec<f32> = pixels.iter().map(|p| p[c]).collect();
        v.sort_by(f32::total_cmp);
        *o = v[v.len() / 2];
    }
    out
}

struct Reading {
    background: &'static str,
    shape: Option<&'static str>,
    /// Share of the image the shape covers.
    coverage: f32,
    /// Centre of the shape's pixels, in pixels from the top left.
    centroid: (f32, f32),
}

/// The background is the border's median colour; the shape is every pixel far
/// from it, named by its median colour.
fn read(png: &[u8]) -> Reading {
    let img = image::load_from_memory(png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let px = |x: u32, y: u32| img.get_pixel(x, y).0.map(f32::from);
    let mut border = Vec::new();
    let mut all = Vec::new();
    for y in 0..h {
        for x in 0..w {
            all.push((x, y, px(x, y)));
            if x < 2 || y < 2 || x >= w - 2 || y >= h - 2 {
                border.push(px(x, y));
            }
        }
    }
    let bg = median(&border);
    let fg: Vec<(u32, u32, [f32; 3])> = all
        .into_iter()
        .filter(|(_, _, p)| dist(*p, bg) > 60.0)
        .collect();
    let colours: Vec<[f32; 3]> = fg.iter().map(|(_, _, p)| *p).collect();
    let n = fg.len().max(1) as f32;
    Reading {
        background: name(bg),
        shape: (fg.len() >= 12).then(|| name(median(&colours))),
        coverage: fg.len() as f32 / (w * h) as f32,
        centroid: (
            fg.iter().map(|(x, _, _)| *x as f32).sum::<f32>() / n,
            fg.iter().map(|(_, y, _)| *y as f32).sum::<f32>() / n,
        ),
    }
}

#[tokio::test]
async fn the_default_model_draws_the_colours_and_places_it_is_asked_for() {
    let info = draws_what_it_is_asked_for(&[]).await;
    assert_eq!(info["dtype"], "f32");
}

/// The same prompts through the 8-bit weight path: int8 UNet layers, a
/// quarter of their f32 memory, the same pictures.
#[tokio::test]
async fn the_default_model_in_q8_draws_the_same_things() {
    let info = draws_what_it_is_asked_for(&["--dtype", "q8"]).await;
    assert_eq!(info["dtype"], "q8");
    let cache = tempfile::tempdir().unwrap();
    let f32 = Worker::spawn(&[], &[("SD_WORKER_CACHE", cache.path().to_str().unwrap())]);
    f32.wait_ready().await;
    let (_, f32_info) = f32.get_json("/v1/info").await;
    let weights = |i: &serde_json::Value| i["model"]["memory"]["weights_bytes"].as_u64().unwrap();
    assert!(
        weights(&info) < weights(&f32_info) * 6 / 10,
        "q8 weights {} vs f32 {}",
        weights(&info),
        weights(&f32_info)
    );
}

/// Starts the worker on the bundled model with `args`, checks four prompts'
/// pictures, and returns its `/v1/info`.
async fn draws_what_it_is_asked_for(args: &[&str]) -> serde_json::Value {
    let cache = tempfile::tempdir().unwrap();
    let w = Worker::spawn(args, &[("SD_WORKER_CACHE", cache.path().to_str().unwrap())]);
    w.wait_ready().await;
    let (_, info) = w.get_json("/v1/info").await;
    assert_eq!(info["model"]["id"], "sd-demo-shapes");
    assert_eq!(info["model"]["native_width"], 64);
    // Its sd-worker.json: prompts in its captions' phrasing, to suggest.
    assert_eq!(
        info["model"]["example_prompts"][0],
        "a red circle on a blue background"
    );

    // (prompt, shape colour, background colour, where the shape's centre must
    // be: x range, y range in pixels); default steps, guidance and scheduler.
    // A shape with no position named is centred (the training captions' rule).
    let centre = (24.0..40.0, 24.0..40.0);
    let cases = [
        (
            "a red circle on a blue background",
            "red",
            "blue",
            centre.clone(),
        ),
        (
            "a large yellow square on a black background",
            "yellow",
            "black",
            centre.clone(),
        ),
        (
            "a small white triangle on the left on a green background",
            "white",
            "green",
            (8.0..26.0, 22.0..42.0),
        ),
        (
            "a pink star at the top, gray background",
            "pink",
            "gray",
            (22.0..42.0, 8.0..26.0),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (prompt, shape, background, (xs, ys))) in cases.iter().enumerate() {
        let (_, images) = w
            .run_job(json!({"operation": "image_generation", "prompt": prompt, "seed": 7 + i}))
            .await;
        let got = read(&images[0]);
        let (cx, cy) = got.centroid;
        if got.background != *background
            || got.shape != Some(*shape)
            || !(0.02..0.6).contains(&got.coverage)
            || !xs.contains(&cx)
            || !ys.contains(&cy)
        {
            failures.push(format!(
                "{prompt:?}: got background {} and shape {:?} covering {:.0}% centred at ({cx:.0}, {cy:.0})",
                got.background,
                got.shape,
                got.coverage * 100.0
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    info
}

/// Previews show the scheduler's estimate of the clean image through a
/// latent-to-RGB map fitted to the model's VAE: half-way through, the
/// background is already the colour the prompt asks for (noisy latents through
/// a fixed colour table show coloured noise until the end).
#[tokio::test]
async fn previews_half_way_already_show_the_prompts_background() {
    let cache = tempfile::tempdir().unwrap();
    let w = Worker::spawn(&[], &[("SD_WORKER_CACHE", cache.path().to_str().unwrap())]);
    w.wait_ready().await;
    let cases = [
        ("a red circle on a blue background", "blue"),
        ("a large yellow star on a purple background", "purple"),
        ("a white square on a green background", "green"),
    ];
    let mut failures = Vec::new();
    for (i, (prompt, background)) in cases.iter().enumerate() {
        for scheduler in ["euler", "dpmpp_2m", "ddim"] {
            let (msgs, _) = w
                .run_job(
                    json!({"operation": "image_generation", "prompt": prompt, "seed": 11 + i,
                    "steps": 20, "preview_every": 10, "scheduler": scheduler}),
                )
                .await;
            let previews: Vec<_> = msgs.iter().filter(|m| m.kind() == "preview").collect();
            assert_eq!(
                previews.len(),
                2,
                "{scheduler}: previews at steps 10 and 20"
            );
            let half = previews[0].json();
            assert_eq!(half["step"], 10);
            assert_eq!(half["format"], "jpeg");
            let got = read(&common::decode_b64(half["image"].as_str().unwrap()));
            if got.background != *background {
                failures.push(format!(
                    "{prompt:?} with {scheduler}: the preview at step 10 has a {} background",
                    got.background
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
