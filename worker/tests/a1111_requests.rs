//! How the AUTOMATIC1111 adapter reads what A1111 clients send: numbers as
//! A1111's pydantic models take them, and a schedule without a sampler.

mod common;

use common::a1111::{a1111_error, info, png_of, post, txt, with};
use common::{decode_b64, Worker};
use sd_worker::model::generate::{write_model, WeightInit};
use sd_worker::model::shapes::ModelShape;
use serde_json::json;

/// Numbers as pydantic's lax mode reads A1111's fields: integral floats for
/// integers, numeric strings (what png-info gives back) for any number.
#[tokio::test]
async fn integral_floats_and_numeric_strings_run_as_the_plain_numbers_do() {
    let w = Worker::start(&[]).await;
    let plain = with(txt(11), json!({"cfg_scale": 7}));
    let want = png_of(&w, plain.clone()).await;
    for changes in [
        json!({"steps": 3.0}),
        json!({"steps": "3"}),
        json!({"width": 64.0, "height": " 64 "}),
        json!({"seed": "11", "cfg_scale": "7"}),
        json!({"seed": 11.0, "cfg_scale": 7.0}),
    ] {
        let got = png_of(&w, with(plain.clone(), changes.clone())).await;
        assert!(got == want, "{changes}: another picture");
    }
    let (status, answer) = post(&w, "/sdapi/v1/txt2img", with(plain, json!({"seed": "-1"}))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(info(&answer)["seed"].as_u64().is_some(), "{answer}");
    for bad in [json!(20.5), json!("twenty"), json!(true)] {
        let (status, err) =
            post(&w, "/sdapi/v1/txt2img", with(txt(1), json!({"steps": bad}))).await;
        assert_eq!(
            (status, a1111_error(&err).as_str()),
            (422, "steps"),
            "{err}"
        );
        let detail = err["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("`steps` must be a whole number"),
            "{detail}"
        );
        for rust in ["u32", "line 1", "column", "invalid type", "floating point"] {
            assert!(!detail.contains(rust), "{detail}");
        }
    }
}

/// `scheduler` without `sampler_name` applies to the model's default sampler,
/// through the same table as with one: a pair the table lacks is refused.
#[tokio::test]
async fn a_schedule_without_a_sampler_applies_to_the_models_default() {
    // The tiny model's default is Euler, which has no Karras schedule.
    let w = Worker::start(&[]).await;
    let (_, v1) = w.get_json("/v1/info").await;
    assert_eq!(v1["defaults"]["scheduler"], "euler");
    let plain = json!({"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 5});
    let want = png_of(&w, plain.clone()).await;
    let automatic = png_of(&w, with(plain.clone(), json!({"scheduler": "Automatic"}))).await;
    assert!(automatic == want, "Automatic is not the default");
    for bad in ["Karras", "Exponential", "Euler a"] {
        let (status, err) = post(
            &w,
            "/sdapi/v1/txt2img",
            with(plain.clone(), json!({"scheduler": bad})),
        )
        .await;
        assert_eq!(
            (status, a1111_error(&err).as_str()),
            (422, "scheduler"),
            "{bad}: {err}"
        );
    }
    // An unknown sampler is refused with A1111's names, not wire names.
    let (status, err) = post(
        &w,
        "/sdapi/v1/txt2img",
        with(plain, json!({"sampler_name": "Heun"})),
    )
    .await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "sampler_name"),
        "{err}"
    );
    let detail = err["detail"].as_str().unwrap();
    assert!(
        detail.contains("Euler a") && detail.contains("DPM++ 2M Karras"),
        "{detail}"
    );
    assert!(
        !detail.contains("euler_a") && !detail.contains("dpmpp_2m"),
        "{detail}"
    );

    // A model whose default is DPM++ 2M: "Karras" runs DPM++ 2M Karras.
    let root = tempfile::tempdir().unwrap();
    let mut shape = ModelShape::tiny();
    shape.scheduler_config["_class_name"] = "DPMSolverMultistepScheduler".into();
    write_model(root.path(), &shape, WeightInit::Seeded(1)).unwrap();
    let w = Worker::start_with_model(root.path().to_str().unwrap(), &[]).await;
    let (_, v1) = w.get_json("/v1/info").await;
    assert_eq!(v1["defaults"]["scheduler"], "dpmpp_2m");
    let body = json!({"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 5,
                      "scheduler": "Karras"});
    let (status, answer) = post(&w, "/sdapi/v1/txt2img", body).await;
    assert_eq!(status, 200, "{answer}");
    let got = info(&answer);
    assert_eq!(
        (got["sampler_name"].as_str(), got["scheduler"].as_str()),
        (Some("DPM++ 2M"), Some("Karras"))
    );
    let (_, images) = w
        .run_job(json!({"operation": "image_generation", "prompt": "a red circle", "steps": 3,
                        "width": 64, "height": 64, "seed": 5, "scheduler": "dpmpp_2m_karras", "rng": "nv"}))
        .await;
    assert!(
        images[0] == decode_b64(answer["images"][0].as_str().unwrap()),
        "not dpmpp_2m_karras's picture"
    );
}
