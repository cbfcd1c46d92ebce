// Drives a running worker with the official `openai` npm package, unmodified:
// only baseURL and apiKey are set.
//
//     node openai_images.mjs URL TOKEN
//
// The package is resolved from $OPENAI_NODE_MODULES (scripts/test-openai-client.sh
// installs it there, outside the pnpm workspace). Prints one line per check and
// a closing `N passed, N failed`; exits 1 on any failure. Images are checked by
// decoding them here (a small PNG reader on node:zlib), as the Python client does.

import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import zlib from "node:zlib";

const modules = process.env.OPENAI_NODE_MODULES;
if (!modules) {
  console.error("set OPENAI_NODE_MODULES to the node_modules folder holding `openai`");
  process.exit(2);
}
// ES modules resolve bare names from this file's folder, not from that one:
// import the package's own ESM entry points, as its `exports` map names them.
const pkgDir = path.join(modules, "openai");
const { exports } = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const esm = (entry) => import(pathToFileURL(path.join(pkgDir, entry)).href);
const { default: OpenAI, toFile } = await esm(exports["."].default);
const { VERSION } = await esm(exports["./version"].import);

const URL = process.argv[2].replace(/\/+$/, "");
const TOKEN = process.argv[3];
const client = new OpenAI({ baseURL: `${URL}/v1`, apiKey: TOKEN, maxRetries: 0, timeout: 300_000 });
const PROMPT = "a lighthouse on a cliff at dusk";

// --- PNG, enough for the worker's 8-bit output and our inputs ---------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A PNG of `channels` 8-bit channels (3: RGB, 4: RGBA); pixel(x, y) -> array. */
function pngEncode(width, height, channels, pixel) {
  const raw = Buffer.alloc(height * (1 + width * channels));
  let o = 0;
  for (let y = 0; y < height; y++) {
    raw[o++] = 0;
    for (let x = 0; x < width; x++) for (const c of pixel(x, y)) raw[o++] = c;
  }
  const chunk = (kind, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(kind, "latin1"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, channels === 4 ? 6 : 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", zlib.deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** {width, height, channels, rows} of an 8-bit non-interlaced PNG. */
function pngDecode(data) {
  if (data.subarray(0, 8).toString("latin1") !== "\x89PNG\r\n\x1a\n") throw new Error("not a PNG");
  let pos = 8;
  const idat = [];
  let ihdr = null;
  while (pos < data.length) {
    const length = data.readUInt32BE(pos);
    const kind = data.subarray(pos + 4, pos + 8).toString("latin1");
    const body = data.subarray(pos + 8, pos + 8 + length);
    pos += 12 + length;
    if (kind === "IHDR") ihdr = body;
    else if (kind === "IDAT") idat.push(body);
  }
  const width = ihdr.readUInt32BE(0);
  const height = ihdr.readUInt32BE(4);
  const [depth, colorType, , , interlace] = ihdr.subarray(8);
  if (depth !== 8 || interlace !== 0) throw new Error(`unsupported PNG depth ${depth} interlace ${interlace}`);
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[colorType];
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const rows = [];
  let prev = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? line[i - channels] : 0;
      const b = prev[i];
      const c = i >= channels ? prev[i - channels] : 0;
      let add = 0;
      if (f === 1) add = a;
      else if (f === 2) add = b;
      else if (f === 3) add = (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        add = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[i] = (line[i] + add) & 255;
    }
    rows.push(line);
    prev = line;
  }
  return { width, height, channels, rows };
}

const b64 = (s) => Buffer.from(s, "base64");

// --- the worker's own API, for cross-checks ---------------------------------

async function ours(method, p, body, token = TOKEN) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(URL + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
  return (res.headers.get("content-type") ?? "").startsWith("application/json") ? res.json() : Buffer.from(await res.arrayBuffer());
}

async function jobUntilDone(jobId) {
  for (let i = 0; i < 3000; i++) {
    const snap = await ours("GET", `/v1/jobs/${jobId}`);
    if (["completed", "failed", "cancelled"].includes(snap.status)) return snap;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${jobId} did not end`);
}

function assert(cond, message) {
  if (!cond) throw new Error(typeof message === "function" ? message() : message ?? "assertion failed");
}
const json = (v) => JSON.stringify(v);

const INFO = await ours("GET", "/v1/info");
const { limits: LIMITS, defaults: DEFAULTS } = INFO;
const M = LIMITS.size_multiple;
// A non-square size within the limits, so width and height cannot be swapped unseen.
const W = DEFAULTS.width;
const H = DEFAULTS.height - M >= LIMITS.min_size ? DEFAULTS.height - M : DEFAULTS.height + M;
const SIZE = `${W}x${H}`;

const gradientPng = () => pngEncode(W, H, 3, (x, y) => [Math.floor((x * 255) / W), Math.floor((y * 255) / H), 128]);
const png = (bytes, name) => toFile(bytes, name, { type: "image/png" });

// --- checks -----------------------------------------------------------------

const CHECKS = {
  async generate_two_pngs_of_the_asked_size() {
    const res = await client.images.generate({ prompt: PROMPT, n: 2, size: SIZE, response_format: "b64_json" });
    assert(res.data.length === 2, `${res.data.length} images`);
    for (const d of res.data) {
      assert(d.revised_prompt === null, `revised_prompt ${d.revised_prompt}`);
      const { width, height } = pngDecode(b64(d.b64_json));
      assert(width === W && height === H, `${width}x${height}, asked ${SIZE}`);
    }
    assert(res.created > 0, "created");
  },

  async a_seed_sent_as_an_extra_param_gives_the_same_bytes_as_the_same_job_through_v1_jobs() {
    const seed = 424242;
    // The SDK sends params it does not know as they are ("undocumented request params").
    const res = await client.images.generate({ prompt: PROMPT, n: 2, size: SIZE, seed });
    assert(res.seed === seed, `seed ${res.seed}`);
    const snap = await ours("GET", `/v1/jobs/${res.job_id}`);
    assert(snap.seed === seed && snap.status === "completed", json(snap.status));
    assert(json(snap.result.images.map((i) => i.image)) === json(res.data.map((d) => d.b64_json)), "job images differ");
    const accepted = await ours("POST", "/v1/jobs", {
      operation: "image_generation", prompt: PROMPT, seed, width: W, height: H, num_images: 2,
    });
    const direct = await jobUntilDone(accepted.job_id);
    assert(direct.status === "completed", json(direct));
    const theirs = res.data.map((d) => b64(d.b64_json));
    const mine = direct.result.images.map((i) => b64(i.image));
    assert(theirs.length === 2 && theirs.every((t, i) => t.equals(mine[i])),
      "the OpenAI route and /v1/jobs gave different bytes for the same seed");
  },

  async rng_sent_as_an_extra_param_gives_the_bytes_of_v1_jobs_with_that_rng() {
    const res = await client.images.generate({ prompt: PROMPT, size: SIZE, seed: 31, rng: "torch-cpu" });
    const theirs = b64(res.data[0].b64_json);
    assert(theirs.includes("RNG: CPU"), "the PNG parameters do not name the torch CPU source");
    for (const [rng, same] of [["torch-cpu", true], ["chacha", false]]) {
      const accepted = await ours("POST", "/v1/jobs", {
        operation: "image_generation", prompt: PROMPT, seed: 31, rng, width: W, height: H,
      });
      const direct = await jobUntilDone(accepted.job_id);
      const mine = b64(direct.result.images[0].image);
      assert(theirs.equals(mine) === same, `rng ${rng}: same bytes ${theirs.equals(mine)}, expected ${same}`);
    }
  },

  async edit_without_a_mask_is_image_to_image() {
    const res = await client.images.edit({ image: await png(gradientPng(), "in.png"), prompt: PROMPT });
    assert(res.data.length === 1, `${res.data.length} images`);
    const { width, height } = pngDecode(b64(res.data[0].b64_json));
    assert(width === W && height === H, `${width}x${height}: \`auto\` is the input's size ${SIZE}`);
    const snap = await ours("GET", `/v1/jobs/${res.job_id}`);
    assert(snap.operation === "image_transform", snap.operation);
  },

  async edit_with_a_mask_repaints_its_transparent_pixels_and_keeps_the_rest() {
    const src = gradientPng();
    // Left half transparent (repaint), right half opaque (keep).
    const mask = pngEncode(W, H, 4, (x) => [0, 0, 0, x < W / 2 ? 0 : 255]);
    const res = await client.images.edit({
      image: await png(src, "in.png"), mask: await png(mask, "mask.png"), prompt: PROMPT, size: SIZE, seed: 7,
    });
    const snap = await ours("GET", `/v1/jobs/${res.job_id}`);
    assert(snap.operation === "image_inpaint", snap.operation);
    assert(snap.seed === 7, `seed ${snap.seed}: the extra multipart field was not sent`);
    const input = pngDecode(src);
    const out = pngDecode(b64(res.data[0].b64_json));
    assert(out.width === W && out.height === H && out.channels === 3, json([out.width, out.height, out.channels]));
    let changedLeft = 0;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const a = input.rows[y].subarray(3 * x, 3 * x + 3);
        const b = out.rows[y].subarray(3 * x, 3 * x + 3);
        if (x >= Math.floor(W / 2)) assert(a.equals(b), () => `kept pixel (${x},${y}) changed: ${[...a]} -> ${[...b]}`);
        else if (!a.equals(b)) changedLeft++;
      }
    }
    assert(changedLeft > (Math.floor(W / 2) * H) / 2, `only ${changedLeft} repainted pixels changed`);
  },

  async image_array_form_uses_the_first_image() {
    const res = await client.images.edit({
      image: [await png(gradientPng(), "a.png"), await png(gradientPng(), "b.png")], prompt: PROMPT,
    });
    assert(res.data.length === 1, `${res.data.length} images`);
  },

  async response_format_url_gives_a_url_fetchable_with_the_token() {
    const res = await client.images.generate({ prompt: PROMPT, size: SIZE, response_format: "url" });
    const url = res.data[0].url;
    assert(url.startsWith(`${URL}/v1/jobs/`) && res.data[0].b64_json == null, url);
    const got = await fetch(url, { headers: { Authorization: `Bearer ${TOKEN}` } });
    assert(got.ok, `${got.status}`);
    const { width, height } = pngDecode(Buffer.from(await got.arrayBuffer()));
    assert(width === W && height === H, `${width}x${height}`);
    const anonymous = await fetch(url);
    assert(anonymous.status === 401, `the image URL answered ${anonymous.status} without the token`);
  },

  async stream_gives_partial_images_then_the_completed_image() {
    const stream = await client.images.generate({ prompt: PROMPT, size: SIZE, stream: true, partial_images: 2, seed: 11 });
    const events = [];
    for await (const e of stream) events.push(e);
    const types = events.map((e) => e.type);
    assert(json(types) === json(["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]), json(types));
    assert(json(events.slice(0, 2).map((e) => e.partial_image_index)) === json([0, 1]), "partial_image_index");
    const last = events.at(-1);
    const { width, height } = pngDecode(b64(last.b64_json));
    assert(width === W && height === H, `${width}x${height}`);
    const same = await client.images.generate({ prompt: PROMPT, size: SIZE, seed: 11 });
    assert(same.data[0].b64_json === last.b64_json, "streamed and plain answers differ for one seed");
  },

  async an_edit_streams_image_edit_events() {
    const stream = await client.images.edit({
      image: await png(gradientPng(), "in.png"), prompt: PROMPT, stream: true, partial_images: 1,
    });
    const types = [];
    for await (const e of stream) types.push(e.type);
    assert(json(types) === json(["image_edit.partial_image", "image_edit.completed"]), json(types));
  },

  async a_bad_size_is_an_openai_shaped_400_the_client_raises_as_bad_request() {
    for (const size of ["13x7", "banana", `${LIMITS.max_size + M}x${H}`]) {
      let caught = null;
      try {
        await client.images.generate({ prompt: PROMPT, size });
      } catch (e) {
        caught = e;
      }
      assert(caught !== null, `size ${size} was accepted`);
      assert(caught instanceof OpenAI.BadRequestError, `size ${size}: ${caught?.constructor?.name}: ${caught}`);
      assert(caught.status === 400, `${caught.status}`);
      const err = caught.error;
      assert(err.param === "size" && caught.param === "size", json(err));
      assert(err.type === "invalid_request_error" && caught.type === "invalid_request_error", json(err));
      assert(json(Object.keys(err).sort()) === json(["code", "message", "param", "type"]), json(err));
      assert(caught.code === err.code && err.message, json(err));
    }
  },

  async a_wrong_key_is_an_authentication_error() {
    const bad = new OpenAI({ baseURL: `${URL}/v1`, apiKey: "not-the-token", maxRetries: 0 });
    let caught = null;
    try {
      await bad.images.generate({ prompt: PROMPT, size: SIZE });
    } catch (e) {
      caught = e;
    }
    assert(caught instanceof OpenAI.AuthenticationError, `accepted a wrong key, or ${caught}`);
    assert(caught.error.type === "invalid_request_error", json(caught.error));
  },
};

let passed = 0;
let failed = 0;
for (const [name, fn] of Object.entries(CHECKS)) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}`);
    console.log(e?.stack ?? String(e));
  }
}
console.log(`openai ${VERSION} (Node ${process.versions.node}): ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
