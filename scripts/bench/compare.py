"""Side-by-side CPU timing of sd-worker and PyTorch + diffusers (issue 20).

For each case, runs `sd-worker bench --model-path DIR --json` and
`torch_bench.py` on the same diffusers folder, alternately (worker, PyTorch,
worker, PyTorch, ...) for `--rounds` rounds, each in a fresh process, and prints
the min and median of every figure per system and the worker/PyTorch ratio of
the medians (below 1: the worker is faster or smaller). Alternating keeps the
ratio fair when the machine's speed drifts. Nothing here is a pass/fail test:
the figures go in docs/MODELS.md.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

FIGURES = [
    ("load_s", "load", "s"),
    ("unet_step_ms", "UNet call (mean of the steps)", "ms"),
    ("vae_decode_ms", "VAE decode", "ms"),
    ("text_encoder_ms", "text encoder", "ms"),
    ("end_to_end_ms", "end to end", "ms"),
    ("peak_rss_mib_generating", "peak RSS", "MiB"),
    ("rss_mib_after_load", "RSS after load", "MiB"),
]


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"no JSON line from {' '.join(cmd)}:\n{out}")
    return json.loads(lines[-1])


def case_commands(args, model: str, size: int | None, steps: int):
    dims = [] if size is None else ["--width", str(size), "--height", str(size)]
    worker = [args.worker, "bench", "--model-path", model, "--steps", str(steps), "--json", *dims]
    if args.dtype:
        worker += ["--dtype", args.dtype]
    torch = [args.python, str(Path(__file__).with_name("torch_bench.py")),
             "--model-path", model, "--steps", str(steps), *dims]
    return {"sd-worker": worker, "pytorch": torch}


def report(title: str, runs: dict[str, list[dict]]) -> None:
    print(f"\n## {title}")
    print(f"{'figure':34} {'sd-worker min / median':>26} {'pytorch min / median':>26} {'ratio':>7}")
    for key, label, unit in FIGURES:
        cols = []
        medians = []
        for system in ("sd-worker", "pytorch"):
            vals = [r[key] for r in runs[system] if r.get(key) is not None]
            if not vals:
                cols.append(f"{'-':>26}")
                medians.append(None)
                continue
            med = statistics.median(vals)
            medians.append(med)
            cols.append(f"{min(vals):>11.1f} / {med:>9.1f} {unit:<3}")
        ratio = (f"{medians[0] / medians[1]:>6.2f}x" if None not in medians and medians[1] else "      -")
        print(f"{label:34} {cols[0]} {cols[1]} {ratio}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True, help="the sd-worker binary")
    p.add_argument("--python", default=sys.executable, help="Python with torch + diffusers")
    p.add_argument("--sd15", help="an SD 1.5-shape diffusers folder (sd-worker generate-model --shape sd15)")
    p.add_argument("--demo", help="the bundled demo model folder")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", help="the worker's --dtype (e.g. q8 once it exists); PyTorch stays f32")
    args = p.parse_args()

    cases = []
    if args.sd15:
        cases.append((f"SD 1.5 shape, {args.size}x{args.size}, batch 2 (guidance), {args.steps} steps, f32",
                      case_commands(args, args.sd15, args.size, args.steps)))
    if args.demo:
        cases.append(("bundled demo model, 64x64, 20 steps, f32", case_commands(args, args.demo, None, 20)))
    if not cases:
        sys.exit("give --sd15 and/or --demo")
    for title, cmds in cases:
        runs = {"sd-worker": [], "pytorch": []}
        for r in range(args.rounds):
            for system, cmd in cmds.items():
                res = run_json(cmd)
                runs[system].append(res)
                print(f"  round {r + 1} {system:9}: UNet {res['unet_step_ms']:.1f} ms, "
                      f"VAE {res['vae_decode_ms']:.1f} ms, end to end {res['end_to_end_ms']:.1f} ms",
                      file=sys.stderr, flush=True)
        report(title, runs)


if __name__ == "__main__":
    main()
