use super::*;
use crate::model::generate::WeightInit;
use crate::model::shapes::ModelShape;
use crate::model::test_util::max_diff;
use crate::model::unet::Unet;
use candle_nn::VarMap;
use std::collections::BTreeSet;

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

fn rand01(shape: &[usize]) -> Tensor {
    Tensor::rand(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

/// A ControlNet for `shape` with Candle's random initialisation, and its weights.
fn random(cfg: &ControlNetConfig) -> (ControlNet, VarMap) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    (ControlNet::new(vb, cfg, false).unwrap(), vm)
}

fn names(vm: &VarMap) -> BTreeSet<String> {
    vm.data().lock().unwrap().keys().cloned().collect()
}

/// Residuals come out one per UNet skip connection, at each one's size, for
/// sizes that do not halve evenly too, and the UNet takes them.
#[test]
fn odd_latent_sizes_give_residuals_the_unet_takes() {
    for shape in [ModelShape::tiny(), ModelShape::tiny_sdxl()] {
        let cfg = ControlNetConfig::for_shape(&shape).unwrap();
        let (net, _) = random(&cfg);
        let unet_cfg = shape.unet.to_candle().unwrap();
        let tt_cfg = shape.unet.text_time().unwrap();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let unet = Unet::new(vb, 4, 4, false, &unet_cfg, tt_cfg).unwrap();
        assert_eq!(net.text_time(), tt_cfg);
        let p = cfg.pixels_per_latent();
        assert_eq!(p, shape.vae.scale_factor());
        for (batch, h, w) in [(1, 5, 7), (2, 9, 13), (1, 8, 8)] {
            let x = randn(&[batch, 4, h, w]);
            let ctx = randn(&[batch, 77, unet_cfg.cross_attention_dim]);
            let tt = tt_cfg.map(|t| TextTime {
                text_embeds: randn(&[batch, t.input_dim - 6 * t.time_embed_dim]),
                time_ids: Tensor::new(&[[64f32, 64., 0., 0., 64., 64.]], &Device::Cpu)
                    .unwrap()
                    .repeat((batch, 1))
                    .unwrap(),
            });
            let control = rand01(&[batch, 3, p * h, p * w]);
            let r = net
                .forward(&x, 700.0, &ctx, tt.as_ref(), &control, 1.0)
                .unwrap();
            // tiny: conv_in, (resnet, downsample), (resnet).
            let half = |s: usize| s.div_ceil(2);
            let want = [
                [batch, 32, h, w],
                [batch, 32, h, w],
                [batch, 32, half(h), half(w)],
                [batch, 32, half(h), half(w)],
            ];
            let got: Vec<_> = r.down.iter().map(|t| t.dims().to_vec()).collect();
            assert_eq!(got, want.map(|d| d.to_vec()), "{} {h}x{w}", shape.name);
            assert_eq!(r.mid.dims(), [batch, 32, half(h), half(w)]);
            let out = unet
                .forward(&x, 700.0, &ctx, tt.as_ref(), Some(&r))
                .unwrap();
            assert_eq!(out.dims(), [batch, 4, h, w]);
        }
        // A control image of the wrong size or batch is an error, not a panic.
        let x = randn(&[1, 4, 8, 8]);
        let ctx = randn(&[1, 77, unet_cfg.cross_attention_dim]);
        let tt = tt_cfg.map(|t| TextTime {
            text_embeds: randn(&[1, t.input_dim - 6 * t.time_embed_dim]),
            time_ids: Tensor::new(&[[64f32, 64., 0., 0., 64., 64.]], &Device::Cpu).unwrap(),
        });
        let small = rand01(&[1, 3, 8, 8]);
        let err = net
            .forward(&x, 1.0, &ctx, tt.as_ref(), &small, 1.0)
            .unwrap_err();
        assert!(err.to_string().contains("times their size"), "{err}");
        let batch2 = rand01(&[2, 3, 8 * p, 8 * p]);
        assert!(net
            .forward(&x, 1.0, &ctx, tt.as_ref(), &batch2, 1.0)
            .is_err());
        if tt.is_some() {
            let full = rand01(&[1, 3, 8 * p, 8 * p]);
            assert!(net.forward(&x, 1.0, &ctx, None, &full, 1.0).is_err());
        }
    }
}

/// The ControlNet asks for the UNet's down-block, mid-block and embedding
/// weights under the UNet's names (as `ControlNetModel.from_unet` copies
/// them), plus its own: diffusers' layout, counted.
#[test]
fn asks_for_the_unets_encoder_weights_and_its_own() {
    for shape in [ModelShape::tiny(), ModelShape::tiny_sdxl()] {
        let cfg = ControlNetConfig::for_shape(&shape).unwrap();
        let (_, vm) = random(&cfg);
        let ours = names(&vm);
        let uvm = VarMap::new();
        let vb = VarBuilder::from_varmap(&uvm, DType::F32, &Device::Cpu);
        let unet_cfg = shape.unet.to_candle().unwrap();
        Unet::new(vb, 4, 4, false, &unet_cfg, shape.unet.text_time().unwrap()).unwrap();
        let shared: BTreeSet<String> = names(&uvm)
            .into_iter()
            .filter(|n| {
                !(n.starts_with("up_blocks.")
                    || n.starts_with("conv_norm_out.")
                    || n.starts_with("conv_out."))
            })
            .collect();
        let own: BTreeSet<&String> = ours.difference(&shared).collect();
        assert!(shared.is_subset(&ours), "{}", shape.name);
        let zero_convs = (0..4).map(|k| format!("controlnet_down_blocks.{k}."));
        for name in &own {
            assert!(
                name.starts_with("controlnet_cond_embedding.")
                    || name.starts_with("controlnet_mid_block.")
                    || zero_convs.clone().any(|p| name.starts_with(&p)),
                "{name}"
            );
        }
        // cond embedding: conv_in, 2 x 2 blocks, conv_out; 4 + 1 zero convs.
        assert_eq!(own.len(), 2 * (1 + 4 + 1) + 2 * 5, "{own:?}");
    }
}

/// The residuals scale with `conditioning_scale`; `bgr` reverses the
/// control image's channels; `global_pool_conditions` makes every residual
/// constant over the image.
#[test]
fn scale_channel_order_and_global_pooling() {
    let shape = ModelShape::tiny();
    let mut cfg = ControlNetConfig::for_shape(&shape).unwrap();
    let (net, vm) = random(&cfg);
    let x = randn(&[1, 4, 6, 6]);
    let ctx = randn(&[1, 77, 32]);
    let control = rand01(&[1, 3, 24, 24]);
    let full = net.forward(&x, 300.0, &ctx, None, &control, 1.0).unwrap();
    let half = net.forward(&x, 300.0, &ctx, None, &control, 0.5).unwrap();
    for (a, b) in full
        .down
        .iter()
        .chain([&full.mid])
        .zip(half.down.iter().chain([&half.mid]))
    {
        assert!(max_diff(&(a * 0.5).unwrap(), b) < 1e-6);
        assert!(
            a.abs()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1e-3
        );
    }

    cfg.controlnet_conditioning_channel_order = "bgr".into();
    let bgr = ControlNet::new(
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        &cfg,
        false,
    )
    .unwrap();
    let flipped = control
        .index_select(&Tensor::new(&[2u32, 1, 0], &Device::Cpu).unwrap(), 1)
        .unwrap();
    let r = bgr.forward(&x, 300.0, &ctx, None, &flipped, 1.0).unwrap();
    assert!(max_diff(&r.mid, &full.mid) < 1e-6);
    let same = bgr.forward(&x, 300.0, &ctx, None, &control, 1.0).unwrap();
    assert!(max_diff(&same.mid, &full.mid) > 1e-4);

    cfg.controlnet_conditioning_channel_order = "rgb".into();
    cfg.global_pool_conditions = true;
    let pooled = ControlNet::new(
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        &cfg,
        false,
    )
    .unwrap();
    let r = pooled
        .forward(&x, 300.0, &ctx, None, &control, 1.0)
        .unwrap();
    for (p, f) in r.down.iter().zip(&full.down) {
        assert_eq!(p.dims(), f.dims());
        let mean = f.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap();
        assert!(max_diff(p, &mean.broadcast_as(f.shape()).unwrap()) < 1e-6);
    }
}

/// An SDXL ControlNet does not fit an SD 1.x UNet nor the other way round,
/// and the error says why; an inpainting UNet takes its base's ControlNets.
#[test]
fn check_compatible_names_the_mismatch_and_the_families() {
    let sd1 = ControlNetConfig::for_shape(&ModelShape::sd15()).unwrap();
    let xl = ControlNetConfig::for_shape(&ModelShape::sdxl()).unwrap();
    sd1.check_compatible(&ModelShape::sd15().unet).unwrap();
    xl.check_compatible(&ModelShape::sdxl().unet).unwrap();
    sd1.check_compatible(&ModelShape::sd15().inpainting().unet)
        .unwrap();
    let err = xl
        .check_compatible(&ModelShape::sd15().unet)
        .unwrap_err()
        .to_string();
    for part in [
        "stable-diffusion-xl ControlNet",
        "stable-diffusion-1 UNet",
        "cross_attention_dim 2048 vs 768",
        "addition_embed_type text_time vs none",
        "block_out_channels",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    let err = sd1
        .check_compatible(&ModelShape::sdxl().unet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stable-diffusion-1 ControlNet"), "{err}");
    assert!(err.contains("stable-diffusion-xl UNet"), "{err}");
    assert!(
        err.contains("addition_embed_type none vs text_time"),
        "{err}"
    );
    // SD 2.x: same blocks as SD 1.x, another context width.
    let mut sd2_unet = ModelShape::sd15().unet;
    sd2_unet.cross_attention_dim = crate::model::config::PerBlock::All(1024);
    let err = sd1.check_compatible(&sd2_unet).unwrap_err().to_string();
    assert!(err.contains("stable-diffusion-2 UNet"), "{err}");
    assert!(err.contains("cross_attention_dim 768 vs 1024"), "{err}");
    let tiny = ControlNetConfig::for_shape(&ModelShape::tiny()).unwrap();
    tiny.check_compatible(&ModelShape::tiny().inpainting().unet)
        .unwrap();
    let err = tiny
        .check_compatible(&ModelShape::tiny_sdxl().unet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("attention"), "{err}");
}

/// Every weight the generator writes is random (also the convs diffusers
/// starts at zero), the files are the same for a seed, and they load.
#[test]
fn generator_writes_nonzero_loadable_weights() {
    let cfg = ControlNetConfig::for_shape(&ModelShape::tiny_sdxl()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate::write_controlnet(a.path(), &cfg, WeightInit::Seeded(3)).unwrap();
    generate::write_controlnet(b.path(), &cfg, WeightInit::Seeded(3)).unwrap();
    let file = |d: &tempfile::TempDir| std::fs::read(d.path().join(WEIGHTS_FILE)).unwrap();
    assert_eq!(file(&a), file(&b));
    let tensors =
        candle_core::safetensors::load(a.path().join(WEIGHTS_FILE), &Device::Cpu).unwrap();
    for (name, t) in &tensors {
        if name.starts_with("controlnet_") {
            let m = t
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(m > 0.0, "{name} is zero");
        }
    }
    let (read, net) = load(a.path(), DType::F32, &Device::Cpu, false).unwrap();
    assert_eq!(read, cfg);
    assert_eq!(
        net.text_time(),
        ModelShape::tiny_sdxl().unet.text_time().unwrap()
    );
    let params = memory::parameters(&[a.path().join(WEIGHTS_FILE)]).unwrap();
    let count: usize = tensors.values().map(|t| t.elem_count()).sum();
    assert_eq!(params, count as u64);
    assert_eq!(
        weights_bytes(&[a.path().join(WEIGHTS_FILE)], DType::F16).unwrap(),
        2 * params
    );
}

/// SD 1.5's ControlNet at 512x512, f32, guidance: the UNet's estimate
/// (its first block's attention scores dominate) plus the conditioning
/// embedding's full-resolution maps.
#[test]
fn working_memory_is_the_unets_plus_the_conditioning_embedding() {
    let shape = ModelShape::sd15();
    let cfg = ControlNetConfig::for_shape(&shape).unwrap();
    let w = Workload {
        latent_height: 64,
        latent_width: 64,
        batch: 2,
        dtype_bytes: 4,
    };
    let unet = memory::unet_bytes(&shape.unet.to_candle().unwrap(), w);
    let ours = controlnet_working_bytes(&cfg, w);
    // 2 x 2 x 16 channels x 512^2 x 4 bytes = 64 MiB over the UNet's.
    assert_eq!(ours - unet, 64 << 20);
}

/// In f16 (the GPU default) the residuals stay close to f32's: the time
/// embedding is computed in f32 and cast, as the UNet's.
#[test]
fn half_precision_stays_close_to_f32() {
    let shape = ModelShape::tiny_sdxl();
    let cfg = ControlNetConfig::for_shape(&shape).unwrap();
    let dir = tempfile::tempdir().unwrap();
    generate::write_controlnet(dir.path(), &cfg, WeightInit::Seeded(5)).unwrap();
    let tt_cfg = cfg.to_candle().unwrap().1.unwrap();
    let x = randn(&[1, 4, 6, 6]);
    let ctx = randn(&[1, 77, cfg.cross_attention_dim]);
    let control = rand01(&[1, 3, 24, 24]);
    let tt = TextTime {
        text_embeds: randn(&[1, tt_cfg.input_dim - 6 * tt_cfg.time_embed_dim]),
        time_ids: Tensor::new(&[[1024f32, 1024., 0., 0., 1024., 1024.]], &Device::Cpu).unwrap(),
    };
    let run = |dtype: DType| {
        let (_, net) = load(dir.path(), dtype, &Device::Cpu, false).unwrap();
        let tt = TextTime {
            text_embeds: tt.text_embeds.to_dtype(dtype).unwrap(),
            time_ids: tt.time_ids.clone(),
        };
        let r = net
            .forward(
                &x.to_dtype(dtype).unwrap(),
                999.0,
                &ctx.to_dtype(dtype).unwrap(),
                Some(&tt),
                &control.to_dtype(dtype).unwrap(),
                1.0,
            )
            .unwrap();
        assert_eq!(r.mid.dtype(), dtype);
        r.mid.to_dtype(DType::F32).unwrap()
    };
    let (full, half) = (run(DType::F32), run(DType::F16));
    let scale = full
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let d = max_diff(&full, &half);
    assert!(d < 2e-2 * scale, "f16 off by {d} (values up to {scale})");
}
