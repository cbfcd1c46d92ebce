"""Drives a running worker with the official `openai` Python package,
unmodified: only base_url and api_key are set.

    python openai_images.py URL TOKEN

Prints one line per check and a closing `N passed, N failed`; exits 1 on any
failure. Images are checked by decoding them here (a small PNG reader, so the
venv needs nothing but `openai`).
"""

import base64
import struct
import sys
import urllib.error
import urllib.request
import zlib

import openai
from openai import OpenAI

import checks  # beside this script

URL, TOKEN = sys.argv[1].rstrip("/"), sys.argv[2]
client = OpenAI(base_url=URL + "/v1", api_key=TOKEN, max_retries=0, timeout=300)
PROMPT = "a lighthouse on a cliff at dusk"


# --- PNG, enough for the worker's 8-bit output and our inputs ---------------

def png_encode(width, height, channels, pixel):
    """A PNG of `channels` 8-bit channels (3: RGB, 4: RGBA); pixel(x, y) -> tuple."""
    color_type = {3: 2, 4: 6}[channels]
    raw = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_decode(data):
    """(width, height, channels, rows of bytes) of an 8-bit non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color_type, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0, f"unsupported PNG depth {depth} interlace {interlace}"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


# --- the worker's own API, for cross-checks ---------------------------------

def ours(method, path, body=None, token=TOKEN):
    """The worker's own API, with the bearer token."""
    return checks.ours(URL, method, path, body, token)


def job_until_done(job_id):
    return checks.job_until_done(URL, TOKEN, job_id)


INFO = ours("GET", "/v1/info")
LIMITS, DEFAULTS = INFO["limits"], INFO["defaults"]
M = LIMITS["size_multiple"]
# A non-square size within the limits, so width and height cannot be swapped unseen.
W = DEFAULTS["width"]
H = max(LIMITS["min_size"], DEFAULTS["height"] - M) if DEFAULTS["height"] - M >= LIMITS["min_size"] else DEFAULTS["height"] + M
SIZE = f"{W}x{H}"

# --- checks -----------------------------------------------------------------

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def generate_two_pngs_of_the_asked_size():
    res = client.images.generate(prompt=PROMPT, n=2, size=SIZE)
    assert len(res.data) == 2, f"{len(res.data)} images"
    for d in res.data:
        assert d.revised_prompt is None
        w, h, _, _ = png_decode(base64.b64decode(d.b64_json))
        assert (w, h) == (W, H), f"{w}x{h}, asked {SIZE}"
    assert res.created > 0


@check
def a_seed_sent_with_extra_body_gives_the_same_bytes_as_the_same_job_through_v1_jobs():
    seed = 424242
    res = client.images.generate(prompt=PROMPT, n=2, size=SIZE, extra_body={"seed": seed})
    job_id = res.model_extra["job_id"]
    assert res.model_extra["seed"] == seed
    snap = ours("GET", f"/v1/jobs/{job_id}")
    assert snap["seed"] == seed and snap["status"] == "completed"
    assert [i["image"] for i in snap["result"]["images"]] == [d.b64_json for d in res.data]
    accepted = ours("POST", "/v1/jobs", {"operation": "image_generation", "prompt": PROMPT, "seed": seed,
                                         "width": W, "height": H, "num_images": 2})
    direct = job_until_done(accepted["job_id"])
    assert direct["status"] == "completed", direct
    theirs = [base64.b64decode(d.b64_json) for d in res.data]
    mine = [base64.b64decode(i["image"]) for i in direct["result"]["images"]]
    assert theirs == mine, "the OpenAI route and /v1/jobs gave different bytes for the same seed"


@check
def rng_and_integral_floats_in_extra_body_give_the_bytes_of_v1_jobs_with_that_rng():
    # Python sends 2.0 as `2.0`: whole-number fields take it as `/v1/jobs` does.
    res = client.images.generate(prompt=PROMPT, n=1.0, size=SIZE, extra_body={"seed": 31.0, "rng": "torch-cpu"})
    assert res.model_extra["seed"] == 31, res.model_extra
    theirs = base64.b64decode(res.data[0].b64_json)
    assert b"RNG: CPU" in theirs, "the PNG parameters do not name the torch CPU source"
    for rng, same in [("torch-cpu", True), ("chacha", False)]:
        accepted = ours("POST", "/v1/jobs", {"operation": "image_generation", "prompt": PROMPT, "seed": 31,
                                             "rng": rng, "width": W, "height": H})
        direct = job_until_done(accepted["job_id"])
        mine = base64.b64decode(direct["result"]["images"][0]["image"])
        assert (theirs == mine) == same, f"rng {rng}: same bytes {theirs == mine}, expected {same}"


@check
def without_a_seed_the_drawn_seed_is_answered_and_is_the_jobs():
    res = client.images.generate(prompt=PROMPT, size=SIZE)
    snap = ours("GET", f"/v1/jobs/{res.model_extra['job_id']}")
    assert snap["seed"] == res.model_extra["seed"]


def gradient_png():
    return png_encode(W, H, 3, lambda x, y: ((x * 255) // W, (y * 255) // H, 128))


@check
def edit_without_a_mask_is_image_to_image():
    res = client.images.edit(image=("in.png", gradient_png(), "image/png"), prompt=PROMPT)
    assert len(res.data) == 1
    w, h, _, _ = png_decode(base64.b64decode(res.data[0].b64_json))
    assert (w, h) == (W, H), f"{w}x{h}: `auto` is the input's size {SIZE}"
    snap = ours("GET", f"/v1/jobs/{res.model_extra['job_id']}")
    assert snap["operation"] == "image_transform", snap["operation"]


@check
def edit_with_a_mask_repaints_its_transparent_pixels_and_keeps_the_rest():
    src = gradient_png()
    # Left half transparent (repaint), right half opaque (keep).
    mask = png_encode(W, H, 4, lambda x, y: (0, 0, 0, 0 if x < W // 2 else 255))
    res = client.images.edit(image=("in.png", src, "image/png"), mask=("mask.png", mask, "image/png"),
                             prompt=PROMPT, size=SIZE, extra_body={"seed": 7})
    snap = ours("GET", f"/v1/jobs/{res.model_extra['job_id']}")
    assert snap["operation"] == "image_inpaint", snap["operation"]
    _, _, ci, rows_in = png_decode(src)
    w, h, co, rows_out = png_decode(base64.b64decode(res.data[0].b64_json))
    assert (w, h) == (W, H) and ci == co == 3, (w, h, ci, co)
    changed_left = 0
    for y in range(H):
        for x in range(W):
            a, b = rows_in[y][3 * x:3 * x + 3], rows_out[y][3 * x:3 * x + 3]
            if x >= W // 2:
                assert a == b, f"kept pixel ({x},{y}) changed: {tuple(a)} -> {tuple(b)}"
            elif a != b:
                changed_left += 1
    assert changed_left > (W // 2) * H // 2, f"only {changed_left} repainted pixels changed"


@check
def image_array_form_uses_the_first_image():
    res = client.images.edit(image=[("a.png", gradient_png(), "image/png"), ("b.png", gradient_png(), "image/png")],
                             prompt=PROMPT)
    assert len(res.data) == 1


@check
def response_format_url_gives_a_url_fetchable_with_the_token():
    res = client.images.generate(prompt=PROMPT, size=SIZE, response_format="url")
    url = res.data[0].url
    assert url.startswith(URL + "/v1/jobs/") and res.data[0].b64_json is None, url
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        w, h, _, _ = png_decode(r.read())
    assert (w, h) == (W, H)
    try:
        urllib.request.urlopen(url, timeout=60)
        raise AssertionError("the image URL answered without the token")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code


@check
def stream_gives_partial_images_then_the_completed_image():
    events = list(client.images.generate(prompt=PROMPT, size=SIZE, stream=True, partial_images=2,
                                         extra_body={"seed": 11}))
    types = [e.type for e in events]
    assert types == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], types
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    w, h, _, _ = png_decode(base64.b64decode(events[-1].b64_json))
    assert (w, h) == (W, H)
    same = client.images.generate(prompt=PROMPT, size=SIZE, extra_body={"seed": 11})
    assert same.data[0].b64_json == events[-1].b64_json, "streamed and plain answers differ for one seed"


@check
def an_edit_streams_image_edit_events():
    events = list(client.images.edit(image=("in.png", gradient_png(), "image/png"), prompt=PROMPT,
                                     stream=True, partial_images=1))
    types = [e.type for e in events]
    assert types == ["image_edit.partial_image", "image_edit.completed"], types


@check
def a_bad_size_is_an_openai_shaped_400_the_client_raises_as_bad_request():
    for size in ["13x7", "banana", f"{LIMITS['max_size'] + M}x{H}"]:
        try:
            client.images.generate(prompt=PROMPT, size=size)
            raise AssertionError(f"size {size} was accepted")
        except openai.BadRequestError as e:
            err = e.response.json()["error"]
            assert err["param"] == "size", err
            assert err["type"] == "invalid_request_error", err
            assert set(err) == {"message", "type", "param", "code"}, err
            assert e.code == err["code"] and err["message"]


@check
def a_wrong_key_is_an_authentication_error():
    bad = OpenAI(base_url=URL + "/v1", api_key="not-the-token", max_retries=0)
    try:
        bad.images.generate(prompt=PROMPT, size=SIZE)
        raise AssertionError("accepted a wrong key")
    except openai.AuthenticationError as e:
        assert e.response.json()["error"]["type"] == "invalid_request_error"


checks.run(CHECKS, f"openai {openai.__version__}")
