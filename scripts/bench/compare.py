"""Side-by-side CPU timing of sd-worker and PyTorch + diffusers (issue 20).

For each case, runs `sd-worker bench --model-path DIR --json` and
`torch_bench.py` on the same diffusers folder, alternately (worker, PyTorch,
worker, PyTorch, ...) for `--rounds` rounds, each in a fresh process, and prints
the min and median of every figure per system and the worker/PyTorch ratio of
the medians (below 1: the worker is faster or smaller). Alternating keeps the
ratio fair when the machine's speed drifts. `--dtype f32,q8` runs the worker in
each precision in turn (one column and one ratio each; PyTorch stays f32).
Nothing here is a pass/fail test: the figures go in docs/MODELS.md.
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
    ("peak_rss_mib_generating", "peak RSS generating", "MiB"),
    ("peak_rss_mib_loading", "peak RSS loading", "MiB"),
    ("rss_mib_after_load", "RSS after load", "MiB"),
]


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"no JSON line from {' '.join(cmd)}:\n{out}")
    return json.loads(lines[-1])


def case_commands(args, model: str, size: int | None, steps: int) -> dict[str, list[str]]:
    """System name -> command: one sd-worker per `--dtype`, then PyTorch."""
    dims = [] if size is None else ["--width", str(size), "--height", str(size)]
    worker = [args.worker, "bench", "--model-path", model, "--steps", str(steps), "--json", *dims]
    cmds = {}
    for dtype in (args.dtype or "").split(",") if args.dtype else [None]:
        name = f"sd-worker {dtype}" if dtype else "sd-worker"
        cmds[name] = worker + (["--dtype", dtype] if dtype else [])
    cmds["pytorch"] = [args.python, str(Path(__file__).with_name("torch_bench.py")),
                       "--model-path", model, "--steps", str(steps), *dims]
    return cmds


def report(title: str, runs: dict[str, list[dict]]) -> None:
    systems = list(runs)
    workers = systems[:-1]
    print(f"\n## {title}")
    header = "".join(f"{s + ' min / median':>28}" for s in systems)
    ratios = "".join(f"{s.removeprefix('sd-worker').strip() or 'ratio':>8}" for s in workers)
    print(f"{'figure':26}{header}  {ratios}  (ratios: sd-worker / pytorch)")
    for key, label, unit in FIGURES:
        cols, medians = [], {}
        for system in systems:
            vals = [r[key] for r in runs[system] if r.get(key) is not None]
            if not vals:
                cols.append(f"{'-':>28}")
                continue
            medians[system] = statistics.median(vals)
            cols.append(f"{min(vals):>13.1f} / {medians[system]:>8.1f} {unit:<3}")
        base = medians.get("pytorch")
        rs = "".join(f"{medians[w] / base:>7.2f}x" if base and w in medians else f"{'-':>8}" for w in workers)
        print(f"{label:26}{''.join(cols)}  {rs}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True, help="the sd-worker binary")
    p.add_argument("--python", default=sys.executable, help="Python with torch + diffusers")
    p.add_argument("--sd15", help="an SD 1.5-shape diffusers folder (sd-worker generate-model --shape sd15)")
    p.add_argument("--demo", help="the bundled demo model folder")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", help="the worker's --dtype, or a comma list (f32,q8) to run each; PyTorch stays f32")
    args = p.parse_args()

    cases = []
    if args.sd15:
        cases.append((f"SD 1.5 shape, {args.size}x{args.size}, batch 2 (guidance), {args.steps} steps",
                      case_commands(args, args.sd15, args.size, args.steps)))
    if args.demo:
        cases.append(("bundled demo model, 64x64, 20 steps", case_commands(args, args.demo, None, 20)))
    if not cases:
        sys.exit("give --sd15 and/or --demo")
    for title, cmds in cases:
        runs = {system: [] for system in cmds}
        for r in range(args.rounds):
            for system, cmd in cmds.items():
                res = run_json(cmd)
                runs[system].append(res)
                print(f"  round {r + 1} {system:13}: UNet {res['unet_step_ms']:.1f} ms, "
                      f"VAE {res['vae_decode_ms']:.1f} ms, end to end {res['end_to_end_ms']:.1f} ms",
                      file=sys.stderr, flush=True)
        report(title, runs)


if __name__ == "__main__":
    main()
