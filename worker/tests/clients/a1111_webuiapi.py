"""Drives a running worker with `webuiapi` (a published AUTOMATIC1111 client,
from PyPI), unmodified: only its host, port and credentials are set, through
its own API (`WebUIApi(host, port)`, `set_auth(user, password)`).

    python a1111_webuiapi.py URL TOKEN

Prints one line per check and a closing `N passed, N failed`; exits 1 on any
failure. The venv holds `webuiapi` and what it needs (requests, Pillow).
"""

import base64
import io
import json
import sys
import threading
import time
import urllib.parse

import webuiapi
from PIL import Image

import checks  # beside this script

URL, TOKEN = sys.argv[1].rstrip("/"), sys.argv[2]
_u = urllib.parse.urlparse(URL)
api = webuiapi.WebUIApi(host=_u.hostname, port=_u.port)
api.set_auth("any-user", TOKEN)
PROMPT = "a lighthouse on a cliff at dusk"
SIZE = dict(width=64, height=64)


def ours(method, path, body=None, token=TOKEN):
    """The worker's own API, with the bearer token."""
    return checks.ours(URL, method, path, body, token)


def job_until_done(job_id):
    return checks.job_until_done(URL, TOKEN, job_id)


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def txt2img_with_a_fixed_seed_gives_the_same_png_as_the_same_job_through_v1_jobs():
    r = api.txt2img(prompt=PROMPT, negative_prompt="blurry", seed=1234, steps=4, cfg_scale=6.0,
                    sampler_name="DPM++ 2M", scheduler="Karras", batch_size=2, **SIZE)
    assert len(r.images) == 2 and r.image.size == (64, 64), r.images
    assert r.info["all_seeds"] == [1234, 1235], r.info
    assert r.info["sampler_name"] == "DPM++ 2M" and r.info["scheduler"] == "Karras", r.info
    assert "Sampler: DPM++ 2M Karras" in r.info["infotexts"][0], r.info["infotexts"]
    assert r.info["infotexts"][0].endswith(", RNG: NV"), r.info["infotexts"]
    assert r.parameters["seed"] == 1234, r.parameters
    job = ours("POST", "/v1/jobs", {"operation": "image_generation", "prompt": PROMPT,
                                    "negative_prompt": "blurry", "seed": 1234, "steps": 4,
                                    "guidance_scale": 6.0, "scheduler": "dpmpp_2m_karras",
                                    "num_images": 2, "width": 64, "height": 64,
                                    "rng": "nv"})  # A1111's default noise
    assert job_until_done(job["job_id"])["status"] == "completed"
    for i in range(2):
        theirs = base64.b64decode(r.json["images"][i])
        assert ours("GET", f"/v1/jobs/{job['job_id']}/images/{i}") == theirs, f"image {i} differs"
    # The A1111 job is an ordinary job too.
    assert ours("GET", f"/v1/jobs/{r.info['job_id']}")["status"] == "completed"


@check
def txt2img_with_enable_hr_runs_the_hires_fix():
    r = api.txt2img(prompt=PROMPT, seed=7, steps=3, enable_hr=True, hr_scale=2,
                    hr_upscaler=webuiapi.HiResUpscaler.Latent, hr_second_pass_steps=2,
                    denoising_strength=0.5, **SIZE)
    assert r.image.size == (128, 128), r.image.size
    text = r.info["infotexts"][0]
    assert "Hires upscale: 2" in text and "Hires upscaler: Latent" in text, text
    assert "Size: 64x64" in text and "Hires steps: 2" in text, text
    assert r.info["denoising_strength"] == 0.5, r.info
    assert r.info["extra_generation_params"]["Hires upscale"] == 2, r.info


@check
def upscalers_are_listed_and_extras_upscales():
    names = [u.name if hasattr(u, "name") else u["name"] for u in api.get_upscalers()]
    assert names[:3] == ["None", "Lanczos", "Nearest"], names
    modes = [m["name"] for m in api.get_latent_upscale_modes()]
    assert "Latent" in modes and "Latent (nearest)" in modes, modes
    r = api.extra_single_image(image=gradient(), upscaler_1=webuiapi.Upscaler.Lanczos,
                               upscaling_resize=2)
    assert r.image.size == (128, 128), r.image.size
    assert "Postprocess upscaler: Lanczos" in r.info, r.info


def gradient():
    return Image.frombytes("RGB", (64, 64), bytes(
        c for y in range(64) for x in range(64) for c in (x * 4, y * 4, (x + y) % 256)))


@check
def img2img_with_a_mask_repaints_the_white_half_and_keeps_the_rest():
    src = gradient()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    r = api.img2img(images=[src], mask_image=mask, mask_blur=0, inpainting_fill=1,
                    denoising_strength=1.0, prompt=PROMPT, seed=7, steps=4, **SIZE)
    out = r.image.convert("RGB")
    assert out.size == (64, 64)
    kept = all(out.getpixel((x, y)) == src.getpixel((x, y)) for x in range(32) for y in range(64))
    changed = sum(out.getpixel((x, y)) != src.getpixel((x, y)) for x in range(32, 64) for y in range(64))
    assert kept, "the black half of the mask must come back unchanged"
    assert changed > 32 * 64 // 2, f"only {changed} repainted pixels changed"
    assert "Denoising strength: 1" in r.info["infotexts"][0], r.info


@check
def img2img_without_a_mask_is_image_to_image():
    r = api.img2img(images=[gradient()], denoising_strength=0.5, prompt=PROMPT, seed=3, steps=4, **SIZE)
    assert r.image.size == (64, 64) and r.info["denoising_strength"] == 0.5, r.info


@check
def get_progress_while_a_job_runs_then_interrupt_cancels_it():
    outcome = {}

    def long_job():
        try:
            outcome["result"] = api.txt2img(prompt=PROMPT, seed=5, steps=150, batch_size=8,
                                            width=128, height=128)
        except RuntimeError as e:
            outcome["error"] = e

    t = threading.Thread(target=long_job)
    t.start()
    progress = None
    for _ in range(600):
        p = api.get_progress()
        if p["state"]["sampling_step"] > 0:
            progress = p
            break
        time.sleep(0.05)
    assert progress is not None, "progress never showed the running job"
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] > 0, progress
    assert progress["eta_relative"] >= 0 and progress["state"]["job"], progress
    api.interrupt()
    t.join(120)
    assert not t.is_alive(), "the interrupted txt2img did not return"
    assert "error" in outcome and outcome["error"].args[0] == 409, outcome
    assert ours("GET", f"/v1/jobs/{progress['state']['job']}")["status"] == "cancelled"
    assert api.get_progress()["progress"] == 0


@check
def png_info_reads_our_pngs_parameters():
    r = api.txt2img(prompt=PROMPT, negative_prompt="fog", seed=42, steps=3, **SIZE)
    info = api.png_info(r.image)
    assert info.info.startswith(PROMPT), info.info
    p = info.parameters
    assert p["Prompt"] == PROMPT and p["Negative prompt"] == "fog", p
    assert p["Seed"] == "42" and p["Steps"] == "3" and p["Size-1"] == "64", p
    # png-info's values are strings; sent back as they are, they draw the same picture.
    again = api.txt2img(prompt=p["Prompt"], negative_prompt=p["Negative prompt"], seed=p["Seed"],
                        steps=p["Steps"], cfg_scale=p["CFG scale"], width=p["Size-1"],
                        height=p["Size-2"], sampler_name=p["Sampler"])
    assert again.json["images"][0] == r.json["images"][0], (p, again.info)


@check
def samplers_and_models_are_listed():
    names = [s["name"] for s in api.get_samplers()]
    assert "Euler a" in names and "DPM++ 2M Karras" in names, names
    model = ours("GET", "/v1/info")["model"]["id"]
    models = api.get_sd_models()
    assert [m["title"] for m in models] == [model], models
    assert api.get_options()["sd_model_checkpoint"] == model
    api.set_options({"sd_model_checkpoint": model})


@check
def a_wrong_password_is_refused():
    bad = webuiapi.WebUIApi(host=_u.hostname, port=_u.port)
    bad.set_auth("any-user", "not-the-token")
    try:
        bad.txt2img(prompt=PROMPT, steps=2, **SIZE)
        raise AssertionError("accepted a wrong password")
    except RuntimeError as e:
        assert e.args[0] == 401, e.args
        assert set(json.loads(e.args[1])) >= {"error", "detail", "body", "errors"}, e.args


def control_image():
    """A bright square on a dark ground, wider than the output (the resize mode matters)."""
    img = Image.new("RGB", (96, 64), (20, 30, 60))
    img.paste((230, 220, 40), (24, 16, 72, 48))
    return img


def b64(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@check
def txt2img_with_a_controlnet_unit_gives_the_same_png_as_the_same_controlnets_through_v1_jobs():
    ctrl = control_image()
    unit = webuiapi.ControlNetUnit(image=ctrl, module="canny", model="tiny-canny", weight=0.8,
                                   resize_mode="Crop and Resize", threshold_a=50, threshold_b=150,
                                   guidance_start=0.1, guidance_end=0.9, pixel_perfect=True)
    # webuiapi 0.9.17 writes the units into its default `alwayson_scripts` dict, which Python
    # shares between calls: later calls without units would resend them. Pass a fresh one.
    r = api.txt2img(prompt=PROMPT, seed=99, steps=4, cfg_scale=6.0, sampler_name="Euler a",
                    controlnet_units=[unit], alwayson_scripts={}, **SIZE)
    assert r.info["warnings"] == [], r.info["warnings"]
    entry = ("Module: canny, Model: tiny-canny, Weight: 0.8, Threshold A: 50, Threshold B: 150, "
             "Guidance Start: 0.1, Guidance End: 0.9")
    assert r.info["extra_generation_params"] == {"ControlNet 0": entry}, r.info
    assert f'ControlNet 0: "{entry}"' in r.info["infotexts"][0], r.info["infotexts"]
    job = ours("POST", "/v1/jobs", {"operation": "image_generation", "prompt": PROMPT, "seed": 99,
                                    "steps": 4, "guidance_scale": 6.0, "scheduler": "euler_a",
                                    "rng": "nv", "resize_mode": "crop", "width": 64, "height": 64,
                                    "controlnets": [{"model": "tiny-canny", "image": b64(ctrl),
                                                     "preprocessor": "canny", "low_threshold": 50,
                                                     "high_threshold": 150, "conditioning_scale": 0.8,
                                                     "guidance_start": 0.1, "guidance_end": 0.9}]})
    assert job_until_done(job["job_id"])["status"] == "completed"
    theirs = base64.b64decode(r.json["images"][0])
    assert ours("GET", f"/v1/jobs/{job['job_id']}/images/0") == theirs, "the mapping is not exact"
    # A disabled unit, or one without a model, changes nothing.
    plain = api.txt2img(prompt=PROMPT, seed=99, steps=4, cfg_scale=6.0, sampler_name="Euler a",
                        alwayson_scripts={}, **SIZE)
    assert plain.image.tobytes() != r.image.tobytes(), "the unit did not matter"
    for idle in (webuiapi.ControlNetUnit(image=ctrl, module="canny", model="tiny-canny", enabled=False),
                 webuiapi.ControlNetUnit(image=ctrl, module="canny")):  # model "None"
        same = api.txt2img(prompt=PROMPT, seed=99, steps=4, cfg_scale=6.0, sampler_name="Euler a",
                           controlnet_units=[idle], alwayson_scripts={}, **SIZE)
        assert same.json["images"][0] == plain.json["images"][0], same.info


@check
def img2img_with_a_unit_without_image_controls_with_the_init_image():
    src = gradient()
    unit = webuiapi.ControlNetUnit(module="invert (from white bg & black line)", model="tiny-canny",
                                   resize_mode="Just Resize")
    r = api.img2img(images=[src], denoising_strength=0.6, prompt=PROMPT, seed=8, steps=4,
                    cfg_scale=6.0, sampler_name="Euler a", controlnet_units=[unit],
                    alwayson_scripts={}, **SIZE)
    assert r.info["warnings"] == [], r.info["warnings"]
    job = ours("POST", "/v1/jobs", {"operation": "image_transform", "prompt": PROMPT, "seed": 8,
                                    "steps": 4, "guidance_scale": 6.0, "scheduler": "euler_a",
                                    "rng": "nv", "image": b64(src), "strength": 0.6,
                                    "width": 64, "height": 64,
                                    "controlnets": [{"model": "tiny-canny", "image": b64(src),
                                                     "preprocessor": "invert"}]})
    assert job_until_done(job["job_id"])["status"] == "completed"
    theirs = base64.b64decode(r.json["images"][0])
    assert ours("GET", f"/v1/jobs/{job['job_id']}/images/0") == theirs


@check
def a_bad_module_is_refused_naming_the_units_field():
    unit = webuiapi.ControlNetUnit(image=control_image(), module="openpose", model="tiny-canny")
    try:
        api.txt2img(prompt=PROMPT, steps=2, controlnet_units=[unit], alwayson_scripts={}, **SIZE)
        raise AssertionError("accepted a module the worker lacks")
    except RuntimeError as e:
        assert e.args[0] == 422, e.args
        body = json.loads(e.args[1])
        assert body["field"] == "alwayson_scripts.ControlNet.args[0].module", body
        assert "canny" in body["detail"], body


@check
def the_controlnet_extensions_routes_list_and_detect():
    assert api.controlnet_version() == 3
    assert api.controlnet_model_list() == ["tiny-canny"]
    assert webuiapi.ControlNetInterface(api, show_deprecation_warning=False).model_list() == ["tiny-canny"]
    assert api.controlnet_module_list() == ["none", "canny", "invert", "depth_anything_v2"]
    ctrl = control_image()
    r = api.controlnet_detect([ctrl, ctrl], module="canny", threshold_a=60, threshold_b=160).json
    assert r["info"] == "Success" and len(r["images"]) == 2, r.keys()
    edges = ours("POST", "/v1/preprocess", {"image": b64(ctrl), "preprocessor": "canny",
                                            "low_threshold": 60, "high_threshold": 160})
    assert base64.b64decode(r["images"][0]) == edges
    depth = api.controlnet_detect([ctrl], module="depth_anything_v2")
    assert depth.image.size == (96, 64), depth.image


checks.run(CHECKS, f"webuiapi {getattr(webuiapi, '__version__', '0.9.17')}")
