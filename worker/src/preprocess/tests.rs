use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage, RgbaImage};
use sd_worker_sdk::{ErrorCode, PreprocessParams, PreprocessorName};

use super::*;

fn params(name: PreprocessorName) -> PreprocessParams {
    PreprocessParams {
        preprocessor: Some(name),
        ..Default::default()
    }
}

/// The field and message of a refusal.
fn refused(p: &PreprocessParams, at: &str) -> (String, String) {
    let e = validate(p, at).expect_err("should be refused");
    assert_eq!(e.code, ErrorCode::InvalidValue);
    (e.field.unwrap_or_default(), e.message)
}

#[test]
fn defaults_are_valid_for_every_preprocessor() {
    validate(&PreprocessParams::default(), "").unwrap();
    for name in PreprocessorName::ALL {
        validate(&params(name), "").unwrap();
    }
}

#[test]
fn thresholds_in_range_are_accepted() {
    for (low, high) in [(0, 0), (100, 100), (0, 255), (255, 255)] {
        let p = PreprocessParams {
            low_threshold: Some(low),
            high_threshold: Some(high),
            ..params(PreprocessorName::Canny)
        };
        validate(&p, "").unwrap();
    }
    for t in [0, 128, 255] {
        let p = PreprocessParams {
            threshold: Some(t),
            ..params(PreprocessorName::Scribble)
        };
        validate(&p, "").unwrap();
    }
}

#[test]
fn a_threshold_of_another_preprocessor_is_refused_by_name() {
    let p = PreprocessParams {
        threshold: Some(100),
        ..params(PreprocessorName::Canny)
    };
    let (field, message) = refused(&p, "controlnets[1].");
    assert_eq!(field, "controlnets[1].threshold");
    assert_eq!(
        message,
        "`threshold` belongs to the `scribble` preprocessor, not `canny`"
    );

    let p = PreprocessParams {
        high_threshold: Some(100),
        ..params(PreprocessorName::Scribble)
    };
    assert_eq!(refused(&p, "").0, "high_threshold");

    for name in [
        PreprocessorName::None,
        PreprocessorName::Invert,
        PreprocessorName::Depth,
    ] {
        let p = PreprocessParams {
            low_threshold: Some(10),
            ..params(name)
        };
        let (field, message) = refused(&p, "");
        assert_eq!(field, "low_threshold");
        assert!(
            message.contains(&format!("not `{}`", name.as_str())),
            "{message}"
        );
    }
    // No preprocessor at all is `none`.
    let p = PreprocessParams {
        threshold: Some(10),
        ..Default::default()
    };
    assert_eq!(refused(&p, "").0, "threshold");
}

#[test]
fn thresholds_above_255_are_refused() {
    let p = PreprocessParams {
        high_threshold: Some(256),
        ..params(PreprocessorName::Canny)
    };
    assert_eq!(
        refused(&p, ""),
        (
            "high_threshold".into(),
            "`high_threshold` must be 0..=255, got 256".into()
        )
    );
    let p = PreprocessParams {
        threshold: Some(1000),
        ..params(PreprocessorName::Scribble)
    };
    assert_eq!(refused(&p, "").0, "threshold");
}

#[test]
fn canny_low_above_high_names_the_field_given() {
    let p = PreprocessParams {
        low_threshold: Some(150),
        high_threshold: Some(120),
        ..params(PreprocessorName::Canny)
    };
    assert_eq!(
        refused(&p, ""),
        (
            "high_threshold".into(),
            "`high_threshold` (120) must be at least `low_threshold` (150)".into()
        )
    );
    // Only `low_threshold` given: above the default high (200).
    let p = PreprocessParams {
        low_threshold: Some(250),
        ..params(PreprocessorName::Canny)
    };
    assert_eq!(
        refused(&p, ""),
        (
            "low_threshold".into(),
            "`low_threshold` (250) must be at most `high_threshold` (200 by default)".into()
        )
    );
    // Only `high_threshold` given, below the default low (100).
    let p = PreprocessParams {
        high_threshold: Some(90),
        ..params(PreprocessorName::Canny)
    };
    assert_eq!(refused(&p, "").0, "high_threshold");
}

/// A stand-in for the depth preprocessor: state behind `&self`, counted runs.
struct FakeDepth {
    runs: AtomicUsize,
    size: Option<(u32, u32)>,
}

impl Preprocessor for FakeDepth {
    fn name(&self) -> PreprocessorName {
        PreprocessorName::Depth
    }

    fn run(&self, image: &RgbImage, _params: &PreprocessParams) -> anyhow::Result<RgbImage> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let (w, h) = self.size.unwrap_or(image.dimensions());
        Ok(RgbImage::from_pixel(w, h, Rgb([7, 7, 7])))
    }
}

#[test]
fn the_registry_has_the_builtins_and_takes_depth() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Preprocessors>();

    let builtin = Preprocessors::builtin();
    use PreprocessorName::*;
    assert_eq!(builtin.names(), [None, Canny, Invert, Scribble]);
    let e = builtin
        .validate(&params(Depth), "controlnets[0].")
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("controlnets[0].preprocessor"));
    assert_eq!(
        e.message,
        "the `depth` preprocessor is not available on this worker (it has: none, canny, invert, scribble)"
    );
    let img = RgbImage::from_fn(6, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 60, 9]));
    assert!(builtin.run(&img, &params(Depth)).is_err());
    assert_eq!(builtin.run(&img, &params(None)).unwrap(), img);
    assert_eq!(builtin.run(&img, &params(Invert)).unwrap(), invert(&img));

    let depth = Arc::new(FakeDepth {
        runs: AtomicUsize::new(0),
        size: Option::None,
    });
    let all = builtin.clone().with(depth.clone());
    assert_eq!(all.names(), PreprocessorName::ALL);
    all.validate(&params(Depth), "").unwrap();
    let map = all.run(&img, &params(Depth)).unwrap();
    assert_eq!(map.dimensions(), img.dimensions());
    assert_eq!(depth.runs.load(Ordering::SeqCst), 1);

    // `with` replaces the one of the same name; a map of the wrong size is an error.
    let bad = all.with(Arc::new(FakeDepth {
        runs: AtomicUsize::new(0),
        size: Some((3, 3)),
    }));
    assert_eq!(bad.names().len(), 5);
    let e = bad.run(&img, &params(Depth)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the `depth` preprocessor made a 3x3 map from a 6x4 image"
    );
}

#[test]
fn control_rgb_repeats_grey_and_lays_alpha_over_white() {
    let grey = DynamicImage::ImageLuma8(GrayImage::from_pixel(2, 1, Luma([77])));
    assert_eq!(control_rgb(&grey).into_raw(), [77; 6]);
    // Every alpha value is checked against numpy in reference_tests.rs.
    let rgba = RgbaImage::from_vec(2, 1, vec![10, 20, 30, 0, 10, 20, 30, 255]).unwrap();
    let rgb = control_rgb(&DynamicImage::ImageRgba8(rgba));
    assert_eq!(rgb.into_raw(), [255, 255, 255, 10, 20, 30]);
    let plain = RgbImage::from_pixel(2, 2, Rgb([1, 2, 3]));
    assert_eq!(control_rgb(&DynamicImage::ImageRgb8(plain.clone())), plain);
}

#[test]
fn grey_to_rgb_repeats_the_value() {
    let g = GrayImage::from_fn(3, 2, |x, y| Luma([(x * 10 + y) as u8]));
    let rgb = grey_to_rgb(&g);
    for (p, v) in rgb.pixels().zip(g.pixels()) {
        assert_eq!(p.0, [v.0[0]; 3]);
    }
}
