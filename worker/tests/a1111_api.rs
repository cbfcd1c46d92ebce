//! AUTOMATIC1111's API (`/sdapi/v1`) against the real binary: how A1111's
//! fields map onto a job (the same pictures as `/v1/jobs`), errors in A1111's
//! shape, HTTP Basic auth, progress and interrupt, the listings. The
//! `webuiapi` client is driven by `scripts/test-a1111-client.sh`.

mod common;

use base64::Engine as _;
use common::a1111::{a1111_error, info, post, txt};
use common::{b64_png, decode_b64, gradient, long_job, right_half_mask_png, Worker};
use sd_worker::pipeline::encode::read_png_parameters;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn txt2img_answers_a1111_shape_with_the_same_png_as_the_same_job_through_v1_jobs() {
    let w = Worker::start(&[]).await;
    let (status, answer) = post(&w, "/sdapi/v1/txt2img", txt(11)).await;
    assert_eq!(status, 200, "{answer}");
    let info = info(&answer);
    for k in [
        "prompt",
        "negative_prompt",
        "seed",
        "all_seeds",
        "subseed",
        "all_prompts",
        "infotexts",
        "steps",
        "cfg_scale",
        "width",
        "height",
        "sampler_name",
        "batch_size",
        "n_iter",
        "denoising_strength",
    ] {
        assert!(info.get(k).is_some(), "info lacks `{k}`: {info}");
    }
    assert_eq!(info["seed"], json!(11));
    assert_eq!(info["sampler_name"], json!("Euler a"));
    assert_eq!(answer["parameters"]["cfg_scale"], json!(6.5));
    let ours = decode_b64(answer["images"][0].as_str().unwrap());
    let text = read_png_parameters(&ours).expect("our PNG carries parameters");
    assert_eq!(info["infotexts"][0].as_str(), Some(text.as_str()));
    assert!(
        text.contains("Sampler: Euler a") && text.contains("CFG scale: 6.5"),
        "{text}"
    );
    // The job is an ordinary one.
    let job_id = info["job_id"].as_str().unwrap();
    let (s, snap) = w.get_json(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!((s, snap["status"].as_str()), (200, Some("completed")));
    let (_, images) = w
        .run_job(
            json!({"operation": "image_generation", "prompt": "a red circle",
            "negative_prompt": "blurry", "steps": 3, "guidance_scale": 6.5, "width": 64,
            "height": 64, "seed": 11, "scheduler": "euler_ancestral", "rng": "nv"}),
        )
        .await;
    assert_eq!(images[0], ours, "A1111's image differs from the same job's");
    // A1111's default noise (its GPU source, which NV reproduces), named as A1111 names NV.
    assert!(text.ends_with(", RNG: NV"), "{text}");
}

/// `override_settings.randn_source` chooses the noise as A1111's setting does:
/// "CPU" is torch's CPU generator (our `torch-cpu`), "GPU" and "NV" are A1111's
/// Philox reproduction (`nv`); an unknown source is refused naming it.
#[tokio::test]
async fn randn_source_picks_the_same_noise_as_the_rng_field_of_v1_jobs() {
    let w = Worker::start(&[]).await;
    let job = |rng: &str| {
        json!({"operation": "image_generation", "prompt": "a red circle",
        "negative_prompt": "blurry", "steps": 3, "guidance_scale": 6.5, "width": 64,
        "height": 64, "seed": 5, "scheduler": "euler_ancestral", "rng": rng})
    };
    let a1111 = |source: &str| {
        let mut body = txt(5);
        body["override_settings"] = json!({"randn_source": source});
        body
    };
    for (source, rng, named) in [
        ("CPU", "torch-cpu", "CPU"),
        ("GPU", "nv", "NV"),
        ("NV", "nv", "NV"),
    ] {
        let (status, answer) = post(&w, "/sdapi/v1/txt2img", a1111(source)).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            info(&answer)["warnings"]
                .as_array()
                .is_none_or(|w| w.is_empty()),
            "{answer}"
        );
        let theirs = decode_b64(answer["images"][0].as_str().unwrap());
        let (_, ours) = w.run_job(job(rng)).await;
        assert_eq!(ours[0], theirs, "randn_source {source} is not rng {rng}");
        let text = read_png_parameters(&theirs).unwrap();
        assert!(text.ends_with(&format!(", RNG: {named}")), "{text}");
    }
    let (status, err) = post(&w, "/sdapi/v1/txt2img", a1111("cuda")).await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "override_settings.randn_source"),
        "{err}"
    );
}

#[tokio::test]
async fn batch_size_times_n_iter_images_with_consecutive_seeds_and_a1111s_schedule_pair() {
    let w = Worker::start(&[]).await;
    let mut body = txt(100);
    body["batch_size"] = json!(2);
    body["n_iter"] = json!(2);
    body["sampler_name"] = json!("DPM++ 2M");
    body["scheduler"] = json!("Karras");
    body["override_settings"] = json!({"CLIP_stop_at_last_layers": 2});
    let (status, answer) = post(&w, "/sdapi/v1/txt2img", body).await;
    assert_eq!(status, 200, "{answer}");
    let info = info(&answer);
    assert_eq!(answer["images"].as_array().unwrap().len(), 4);
    assert_eq!(info["all_seeds"], json!([100, 101, 102, 103]));
    assert_eq!(
        (info["sampler_name"].as_str(), info["scheduler"].as_str()),
        (Some("DPM++ 2M"), Some("Karras"))
    );
    assert!(info["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Sampler: DPM++ 2M Karras"));
    assert!(
        info["warnings"]
            .to_string()
            .contains("CLIP_stop_at_last_layers"),
        "{info}"
    );
    // A schedule the sampler lacks here is refused naming it.
    let mut bad = txt(1);
    bad["scheduler"] = json!("Exponential");
    let (status, err) = post(&w, "/sdapi/v1/txt2img", bad).await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "scheduler"),
        "{err}"
    );
}

#[tokio::test]
async fn send_images_false_answers_no_images_and_a_random_seed_is_reported() {
    let w = Worker::start(&[]).await;
    let mut body = txt(-1);
    body["send_images"] = json!(false);
    let (status, answer) = post(&w, "/sdapi/v1/txt2img", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["images"], json!([]));
    let seed = info(&answer)["seed"].as_i64().unwrap();
    assert!(seed >= 0);
    assert_eq!(answer["parameters"]["seed"], json!(seed));
}

#[tokio::test]
async fn refusals_are_a1111_shaped_and_name_a1111_fields() {
    let w = Worker::start(&[]).await;
    let mut body = txt(1);
    body["cfg_scale"] = json!(1000);
    let (status, err) = post(&w, "/sdapi/v1/txt2img", body).await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "cfg_scale"),
        "{err}"
    );
    let mut body = txt(1);
    body["steps"] = json!("many");
    let (status, err) = post(&w, "/sdapi/v1/txt2img", body).await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "steps"),
        "{err}"
    );
    let mut body = txt(1);
    body["batch_size"] = json!(100);
    let (status, err) = post(&w, "/sdapi/v1/txt2img", body).await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "batch_size"),
        "{err}"
    );
    let (status, err) = post(&w, "/sdapi/v1/img2img", txt(1)).await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "init_images"),
        "{err}"
    );
    let (status, err) = post(
        &w,
        "/sdapi/v1/options",
        json!({"sd_model_checkpoint": "another"}),
    )
    .await;
    assert_eq!(
        (status, a1111_error(&err).as_str()),
        (422, "sd_model_checkpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn img2img_with_a_mask_repaints_only_the_white_half_or_the_black_one_when_inverted() {
    let w = Worker::start(&[]).await;
    let input = gradient(64, 64);
    let mask = base64::engine::general_purpose::STANDARD.encode(right_half_mask_png(64, 64));
    for (invert, kept_left) in [(0, true), (1, false)] {
        let mut body = txt(5);
        body["init_images"] = json!([b64_png(input.clone().into())]);
        body["mask"] = json!(mask);
        body["mask_blur"] = json!(0);
        body["inpainting_mask_invert"] = json!(invert);
        body["denoising_strength"] = json!(1.0);
        let (status, answer) = post(&w, "/sdapi/v1/img2img", body).await;
        assert_eq!(status, 200, "{answer}");
        let out = image::load_from_memory(&decode_b64(answer["images"][0].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let same = |x0: u32, x1: u32| {
            (x0..x1).all(|x| (0..64).all(|y| out.get_pixel(x, y) == input.get_pixel(x, y)))
        };
        assert_eq!(same(0, 32), kept_left, "invert {invert}: left half");
        assert_eq!(same(32, 64), !kept_left, "invert {invert}: right half");
        assert_eq!(info(&answer)["denoising_strength"], json!(1.0));
    }
}

#[tokio::test]
async fn basic_auth_with_any_user_and_the_token_opens_sdapi_only() {
    let w = Worker::start(&["--api-token", "sekrit"]).await;
    let get = |path: &str, user: &str, pass: &str| {
        w.client
            .get(w.url(path))
            .basic_auth(user, Some(pass))
            .send()
    };
    let r = get("/sdapi/v1/sd-models", "anyone", "sekrit")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = get("/sdapi/v1/sd-models", "anyone", "wrong").await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    a1111_error(&r.json().await.unwrap());
    let r = w
        .client
        .get(w.url("/sdapi/v1/sd-models"))
        .bearer_auth("sekrit")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = get("/v1/info", "anyone", "sekrit").await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "Basic is for /sdapi only");
}

#[tokio::test]
async fn progress_shows_the_running_job_and_interrupt_cancels_it() {
    let w = Worker::start(&[]).await;
    let long = long_job();
    let body = json!({"prompt": "a long job", "steps": long["steps"], "batch_size": long["num_images"],
        "width": long["width"], "height": long["height"], "seed": 3});
    let client = w.client.clone();
    let url = w.url("/sdapi/v1/txt2img");
    let waiting = tokio::spawn(async move {
        let r = client.post(url).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    let mut running = Value::Null;
    for _ in 0..200 {
        let (_, p) = w.get_json("/sdapi/v1/progress").await;
        if p["state"]["sampling_step"].as_u64().unwrap_or(0) > 0 {
            running = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running["progress"].as_f64().unwrap() > 0.0, "{running}");
    assert!(running["state"]["sampling_steps"].as_u64().unwrap() > 0);
    assert_eq!(running["state"]["job_count"], json!(1));
    let job = running["state"]["job"].as_str().unwrap().to_string();
    let (s, _) = post(&w, "/sdapi/v1/interrupt", json!({})).await;
    assert_eq!(s, 200);
    let (status, err) = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 409, "{err}");
    a1111_error(&err);
    let (_, snap) = w.get_json(&format!("/v1/jobs/{job}")).await;
    assert_eq!(snap["status"], json!("cancelled"));
    let (_, idle) = w.get_json("/sdapi/v1/progress").await;
    assert_eq!(idle["progress"], json!(0.0));
}

#[tokio::test]
async fn progress_reports_the_callers_own_queued_job_and_another_caller_the_running_one() {
    let w = Worker::start(&[]).await;
    let long = w.submit(long_job()).await;
    let long_id = long["job_id"].as_str().unwrap().to_string();
    // Caller A (127.0.0.1, the worker's own client) queues a txt2img behind the long job.
    let client = w.client.clone();
    let url = w.url("/sdapi/v1/txt2img");
    let waiting = tokio::spawn(async move {
        let r = client.post(url).json(&txt(5)).send().await.unwrap();
        r.status().as_u16()
    });
    let mut mine = Value::Null;
    for _ in 0..200 {
        let (_, p) = w.get_json("/sdapi/v1/progress").await;
        if p["state"]["job"]
            .as_str()
            .is_some_and(|j| !j.is_empty() && j != long_id)
        {
            mine = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mine_id = mine["state"]["job"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !mine_id.is_empty(),
        "caller A never saw its own job: {mine}"
    );
    let (_, snap) = w.get_json(&format!("/v1/jobs/{mine_id}")).await;
    assert_eq!(snap["status"], json!("queued"), "{snap}");
    assert_eq!(snap["seed"], json!(5), "{snap}");
    assert_eq!(mine["progress"], json!(0.0));
    assert_eq!(mine["state"]["sampling_step"], json!(0));
    assert_eq!(mine["state"]["job_count"], json!(2));
    assert_eq!(mine["textinfo"], json!("Waiting..."));
    // Caller B, from another loopback address, started nothing: it sees the running job.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let theirs: Value = other
        .get(w.url("/sdapi/v1/progress"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["state"]["job"], json!(long_id), "{theirs}");
    assert_eq!(theirs["state"]["job_count"], json!(2));
    // Once both jobs ended, caller A is idle again.
    w.delete(&format!("/v1/jobs/{mine_id}")).await;
    w.delete(&format!("/v1/jobs/{long_id}")).await;
    let status = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 409);
    for _ in 0..100 {
        let (_, p) = w.get_json("/sdapi/v1/progress").await;
        if p["state"]["job"] == json!("") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("progress never went idle after both jobs ended");
}

#[tokio::test]
async fn a_client_that_hangs_up_while_waiting_cancels_its_job() {
    let w = Worker::start(&[]).await;
    common::assert_hanging_up_cancels(&w, "/sdapi/v1/txt2img", txt(2)).await;
}

#[tokio::test]
async fn listings_name_the_loaded_model_and_its_schedulers_in_a1111_terms() {
    let w = Worker::start(&[]).await;
    let (_, info) = w.get_json("/v1/info").await;
    let (s, samplers) = w.get_json("/sdapi/v1/samplers").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), info["schedulers"].as_array().unwrap().len());
    assert!(
        names.contains(&"Euler a") && names.contains(&"DPM++ 2M Karras"),
        "{names:?}"
    );
    let (_, schedules) = w.get_json("/sdapi/v1/schedulers").await;
    assert!(schedules.to_string().contains("\"Karras\""), "{schedules}");
    let (_, models) = w.get_json("/sdapi/v1/sd-models").await;
    assert_eq!(models[0]["title"], info["model"]["id"]);
    let (s, flags) = w.get_json("/sdapi/v1/cmd-flags").await;
    assert_eq!((s, &flags["api"]), (200, &json!(true)));
    let (s, memory) = w.get_json("/sdapi/v1/memory").await;
    assert_eq!(s, 200, "{memory}");
    let (free, total) = (
        memory["ram"]["free"].as_u64(),
        memory["ram"]["total"].as_u64(),
    );
    assert!(free.unwrap() > 0 && free < total, "{memory}");
    assert!(
        memory["process"]["rss"].as_u64().unwrap() > 1 << 20,
        "{memory}"
    );
    assert!(memory["cuda"]["error"].is_string(), "{memory}");
    let (_, options) = w.get_json("/sdapi/v1/options").await;
    assert_eq!(options["sd_model_checkpoint"], info["model"]["id"]);
    let (s, _) = post(
        &w,
        "/sdapi/v1/options",
        json!({"sd_model_checkpoint": info["model"]["id"], "samples_format": "jpg"}),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn png_info_parses_our_pngs_infotext() {
    let w = Worker::start(&[]).await;
    let (_, answer) = post(&w, "/sdapi/v1/txt2img", txt(9)).await;
    let (s, parsed) = post(
        &w,
        "/sdapi/v1/png-info",
        json!({"image": answer["images"][0]}),
    )
    .await;
    assert_eq!(s, 200, "{parsed}");
    assert_eq!(parsed["items"]["parameters"], parsed["info"]);
    let p = &parsed["parameters"];
    assert_eq!(
        (p["Prompt"].as_str(), p["Negative prompt"].as_str()),
        (Some("a red circle"), Some("blurry"))
    );
    assert_eq!(
        (
            p["Seed"].as_str(),
            p["Sampler"].as_str(),
            p["Size-1"].as_str()
        ),
        (Some("9"), Some("Euler a"), Some("64"))
    );
}

#[tokio::test]
async fn a_foreign_web_page_cannot_interrupt_or_set_options_on_a_tokenless_worker() {
    let w = Worker::start(&[]).await;
    for path in ["/sdapi/v1/interrupt", "/sdapi/v1/options", "/sdapi/v1/skip"] {
        let r = w
            .client
            .post(w.url(path))
            .header("origin", "http://elsewhere.example")
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        a1111_error(&r.json().await.unwrap());
    }
    let (s, _) = post(&w, "/sdapi/v1/interrupt", json!({})).await;
    assert_eq!(s, 200, "a client that is not a browser sends no Origin");
}
