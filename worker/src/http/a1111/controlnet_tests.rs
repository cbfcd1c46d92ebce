use super::*;
use sd_worker_sdk::PreprocessorName as P;

fn have() -> Vec<P> {
    P::ALL.to_vec()
}

fn nets() -> Vec<String> {
    vec!["tiny-canny".to_string()]
}

fn plan(scripts: Value, img2img: Option<u32>) -> Result<Plan, HttpError> {
    Plan::read(scripts.as_object(), img2img, &nets(), &have())
}

fn units(p: &Plan) -> Vec<Value> {
    let mut body = Map::new();
    p.apply(&mut body);
    body.get("controlnets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A unit as webuiapi 0.9.17's `ControlNetUnit.to_dict` writes it.
fn webuiapi_unit(extra: Value) -> Value {
    let mut u = json!({"image": "AAAA", "mask": null, "module": "canny", "model": "tiny-canny [0f2b1a3c]",
        "weight": 0.8, "resize_mode": "Resize and Fill", "low_vram": false, "processor_res": 512,
        "threshold_a": 64, "threshold_b": 64, "guidance_start": 0.1, "guidance_end": 0.9,
        "control_mode": "Balanced", "pixel_perfect": false, "hr_option": "Both", "enabled": true});
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

#[test]
fn a_webuiapi_unit_becomes_our_unit() {
    let p = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({}))]}}),
        None,
    )
    .unwrap();
    let mut body = Map::new();
    p.apply(&mut body);
    assert_eq!(
        body["controlnets"],
        json!([{"model": "tiny-canny", "image": "AAAA", "preprocessor": "canny",
            "conditioning_scale": 0.8, "guidance_start": 0.1, "guidance_end": 0.9,
            "low_threshold": 64, "high_threshold": 64}])
    );
    assert_eq!(body["resize_mode"], json!("fit"));
    let w = p.warnings((64, 64));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("processor_res 512"), "{w:?}");
    assert!(p.warnings((512, 768)).is_empty());
}

#[test]
fn disabled_units_model_none_and_other_scripts_values_are_skipped() {
    let p = plan(
        json!({"controlnet": {"args": [
            true,
            webuiapi_unit(json!({"enabled": false})),
            webuiapi_unit(json!({"model": "None"})),
            webuiapi_unit(json!({"model": "none", "module": "nonsense"})),
            webuiapi_unit(json!({"model": null})),
            webuiapi_unit(json!({"enabled": "false"})),
        ]}, "ADetailer": {"args": []}}),
        None,
    )
    .unwrap();
    assert!(p.is_empty());
    assert!(units(&p).is_empty());
    let mut body = Map::new();
    p.apply(&mut body);
    assert!(body.is_empty(), "{body:?}");
    assert!(p.warnings((64, 64)).is_empty());
    let p = plan(json!({"ADetailer": {"args": [true, {}]}}), None).unwrap();
    assert_eq!(
        p.warnings((64, 64)),
        vec!["alwayson_scripts.ADetailer ignored: not supported by this worker".to_string()]
    );
}

#[test]
fn modules_are_the_extensions_names_and_labels() {
    let module = |m: Value| {
        plan(
            json!({"ControlNet": {"args": [webuiapi_unit(json!({"module": m}))]}}),
            None,
        )
        .map(|p| (units(&p)[0]["preprocessor"].clone(), p.warnings((512, 512))))
    };
    for (m, ours) in [
        (json!("none"), "none"),
        (json!(null), "none"),
        (json!("canny"), "canny"),
        (json!("invert"), "invert"),
        (json!("invert (from white bg & black line)"), "invert"),
        (json!("depth_anything_v2"), "depth"),
    ] {
        let (p, w) = module(m.clone()).unwrap();
        assert_eq!(p, json!(ours), "{m}");
        assert!(w.is_empty(), "{m}: {w:?}");
    }
    let (p, w) = module(json!("depth")).unwrap();
    assert_eq!(p, json!("depth"));
    assert!(w[0].contains("MiDaS"), "{w:?}");
    for bad in ["depth_midas", "scribble_hed", "threshold", "lineart"] {
        let e = module(json!(bad)).unwrap_err();
        assert_eq!(
            e.error.field.as_deref(),
            Some("alwayson_scripts.ControlNet.args[0].module")
        );
        assert!(
            e.error
                .message
                .contains("one of: none, canny, invert, depth_anything_v2"),
            "{}",
            e.error.message
        );
    }
    // Without a depth model, no depth module.
    let e = Plan::read(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"module": "depth_anything_v2"}))]}})
            .as_object(),
        None,
        &nets(),
        &[P::None, P::Canny, P::Invert, P::Scribble],
    )
    .unwrap_err();
    assert!(
        e.error.message.ends_with("one of: none, canny, invert"),
        "{}",
        e.error.message
    );
}

#[test]
fn thresholds_go_to_canny_only_with_the_extensions_defaults_and_swap() {
    assert_eq!(canny_thresholds(None, None, "").0, 100);
    assert_eq!(
        canny_thresholds(Some(-1.0), Some(-1.0), ""),
        (100, 200, vec![])
    );
    assert_eq!(
        canny_thresholds(Some(50.9), Some(150.0), ""),
        (50, 150, vec![])
    );
    assert_eq!(
        canny_thresholds(Some(220.0), Some(80.0), ""),
        (80, 220, vec![])
    );
    let (low, high, w) = canny_thresholds(Some(0.0), Some(300.0), "u: ");
    assert_eq!((low, high), (100, 200));
    assert_eq!(w.len(), 2, "{w:?}");
    let p = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"module": "invert", "threshold_a": 7}))]}}),
        None,
    )
    .unwrap();
    let u = &units(&p)[0];
    assert!(
        u.get("low_threshold").is_none() && u.get("threshold").is_none(),
        "{u}"
    );
}

#[test]
fn resize_modes_names_numbers_aliases_and_one_per_job() {
    let mode = |m: Value| {
        let p = plan(
            json!({"ControlNet": {"args": [webuiapi_unit(json!({"resize_mode": m}))]}}),
            None,
        )?;
        let mut body = Map::new();
        p.apply(&mut body);
        Ok::<_, HttpError>(body["resize_mode"].clone())
    };
    for (m, ours) in [
        (json!("Just Resize"), "stretch"),
        (json!("Crop and Resize"), "crop"),
        (json!("Resize and Fill"), "fit"),
        (json!("Scale to Fit (Inner Fit)"), "crop"),
        (json!("Envelope (Outer Fit)"), "fit"),
        (json!(0), "stretch"),
        (json!("1"), "crop"),
        (json!(2.0), "fit"),
        (json!(3), "stretch"),
        (json!(null), "crop"),
    ] {
        assert_eq!(mode(m.clone()).unwrap(), json!(ours), "{m}");
    }
    for bad in [json!("Stretch"), json!(4), json!(true)] {
        let e = mode(bad.clone()).unwrap_err();
        assert_eq!(
            e.error.field.as_deref(),
            Some("alwayson_scripts.ControlNet.args[0].resize_mode"),
            "{bad}"
        );
    }
    // Two units that disagree: the first's, and a warning.
    let p = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"resize_mode": 1})),
            webuiapi_unit(json!({"resize_mode": 2}))]}}),
        None,
    )
    .unwrap();
    let w = p.warnings((512, 512));
    assert!(
        w.iter().any(|w| w.starts_with(
            "alwayson_scripts.ControlNet.args[1]: resize_mode `Resize and Fill` ignored"
        )),
        "{w:?}"
    );
    // img2img: its own resize_mode, never the units'.
    let p = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"resize_mode": 0, "image": ""}))]}}),
        Some(0),
    )
    .unwrap();
    let mut body = Map::new();
    body.insert("image".into(), json!("INIT"));
    p.apply(&mut body);
    assert!(body.get("resize_mode").is_none());
    assert_eq!(body["controlnets"][0]["image"], json!("INIT"));
    assert!(p.warnings((512, 512)).is_empty());
}

#[test]
fn images_as_the_extension_reads_them() {
    let image = |v: Value| {
        plan(
            json!({"ControlNet": {"args": [webuiapi_unit(json!({"image": v}))]}}),
            None,
        )
        .map(|p| units(&p)[0]["image"].clone())
    };
    assert_eq!(image(json!({"image": "IMG", "mask": "M"})).unwrap(), "IMG");
    assert_eq!(image(json!(["IMG", "M"])).unwrap(), "IMG");
    assert_eq!(
        image(json!([{"image": "IMG", "mask": null}])).unwrap(),
        "IMG"
    );
    assert_eq!(
        image(json!("data:image/png;base64,IMG")).unwrap(),
        "data:image/png;base64,IMG"
    );
    let legacy = plan(
        json!({"ControlNet": {"args": [{"input_image": "OLD", "model": "tiny-canny", "module": "none"}]}}),
        None,
    )
    .unwrap();
    assert_eq!(units(&legacy)[0]["image"], "OLD");
    let e = image(json!("")).unwrap_err();
    assert_eq!(e.error.code, ErrorCode::MissingField);
    assert_eq!(
        e.error.field.as_deref(),
        Some("alwayson_scripts.ControlNet.args[0].image")
    );
    assert!(image(json!(5)).is_err());
}

#[test]
fn control_modes_and_other_settings_that_change_the_picture_are_warned_about() {
    let p = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"control_mode": "My prompt is more important",
            "guess_mode": true, "pixel_perfect": true, "low_vram": true}))]}}),
        None,
    )
    .unwrap();
    let w = p.warnings((64, 64));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("control_mode `My prompt is more important` ignored"),
        "{w:?}"
    );
    assert!(w[1].contains("guess_mode ignored"), "{w:?}");
    let e = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"control_mode": "Loud"}))]}}),
        None,
    )
    .unwrap_err();
    assert_eq!(
        e.error.field.as_deref(),
        Some("alwayson_scripts.ControlNet.args[0].control_mode")
    );
}

#[test]
fn numbers_are_lax_and_refusals_name_the_a1111_field() {
    let p = plan(
        json!({"controlnet": {"args": [webuiapi_unit(json!({"weight": "0.5", "guidance_end": " 1 ",
            "model": "TINY-CANNY"}))]}}),
        None,
    )
    .unwrap();
    let u = &units(&p)[0];
    assert_eq!(u["conditioning_scale"], json!(0.5));
    assert_eq!(u["guidance_end"], json!(1.0));
    assert_eq!(
        u["model"],
        json!("tiny-canny"),
        "case-insensitive, as listed"
    );
    for (k, v) in [
        ("weight", json!("heavy")),
        ("enabled", json!("maybe")),
        ("model", json!(3)),
    ] {
        let e = plan(
            json!({"controlnet": {"args": [webuiapi_unit(json!({ k: v }))]}}),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.error.field.as_deref(),
            Some(format!("alwayson_scripts.controlnet.args[0].{k}").as_str())
        );
    }
    for bad in [json!({"controlnet": 5}), json!({"controlnet": {"args": 5}})] {
        assert!(plan(bad, None).is_err());
    }
}

#[test]
fn our_validations_refusals_are_renamed_into_the_a1111_fields() {
    let p = plan(
        json!({"ControlNet": {"args": [webuiapi_unit(json!({"enabled": false})), webuiapi_unit(json!({}))]}}),
        None,
    )
    .unwrap();
    let ours = |field: &str, message: &str| {
        HttpError::from(ApiError::new(ErrorCode::InvalidValue, message).with_field(field))
    };
    let e = p
        .rename(ours(
            "controlnets[0].conditioning_scale",
            "`conditioning_scale` must be between 0 and 2",
        ))
        .unwrap();
    assert_eq!(
        e.error.field.as_deref(),
        Some("alwayson_scripts.ControlNet.args[1].weight")
    );
    assert_eq!(e.error.message, "`weight` must be between 0 and 2");
    let e = p.rename(ours("controlnets", "at most 4")).unwrap();
    assert_eq!(
        e.error.field.as_deref(),
        Some("alwayson_scripts.ControlNet.args")
    );
    assert!(p.rename(ours("guidance_scale", "x")).is_err());
}

#[test]
fn a1111_model_names_lose_their_hash() {
    assert_eq!(
        strip_hash("control_v11p_sd15_canny [d14c016b]"),
        "control_v11p_sd15_canny"
    );
    assert_eq!(strip_hash("tiny-canny"), "tiny-canny");
    assert_eq!(strip_hash("odd [name with space]"), "odd [name with space]");
}
