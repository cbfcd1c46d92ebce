"""Reference runs of diffusers' schedulers on fixed inputs.

For every scheduler the worker implements, and for the three timestep
spacings (linspace, leading, trailing) with step counts that do not divide
1000 (7, 13, 30) and steps_offset 0 and 1, this runs diffusers' scheduler
through a whole sampling loop with a made-up, deterministic "model" and
records the timesteps, init_noise_sigma and the sample after a few steps.
No torch randomness is involved: the model output and the noise the
stochastic schedulers draw (DDPM, Euler a, LCM; diffusers' `randn_tensor`
is patched) are fixed functions of the element index, the step index and the
timestep, which worker/src/scheduler/reference_tests.rs computes the same way:

    model(x_in, t)[k] = x_in[k] * (0.6 + 0.3 cos(t / 170))
                        + 0.4 sin(t / 90 + 1) cos(1.3 k + 0.2)
    noise(step i)[k]  = cos(0.7 k + 1.9 i + 0.3)
    x_T[k]            = 1.1 sin(0.9 k + 0.5) * init_noise_sigma

where x_in is the scheduler's `scale_model_input(x, t)` and t the timestep
fed to the model (float, as diffusers returns it), 8 elements of shape
(1, 2, 2, 2), float32 as the pipelines run. Run it with the reference venv
(torch, diffusers and transformers as pinned in training/requirements.txt):

    python worker/tests/reference/scheduler_reference.py \
        > worker/tests/reference/scheduler_reference.json
"""

import json
import math
import sys

import diffusers
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers import (
    scheduling_ddim,
    scheduling_ddpm,
    scheduling_euler_ancestral_discrete,
    scheduling_euler_discrete,
    scheduling_lcm,
)

# Stable Diffusion 1.5's scheduler_config.json (steps_offset and spacing vary below).
SD15 = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "steps_offset": 1,
}
# Stable Diffusion 3's.
SD3 = {"num_train_timesteps": 1000, "shift": 3.0}

N = 8
SHAPE = (1, 2, 2, 2)
RECORDED_STEPS = 4  # the first steps, plus the middle and the last

CLASSES = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "dpmpp_2m_karras": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "lcm": LCMScheduler,
    "flow_euler": FlowMatchEulerDiscreteScheduler,
}

current_step = 0


def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
    """diffusers' randn_tensor, replaced by the fixed noise of the current step."""
    count = math.prod(shape)
    values = [math.cos(0.7 * k + 1.9 * current_step + 0.3) for k in range(count)]
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype or torch.float32)


for module in (
    scheduling_ddim,
    scheduling_ddpm,
    scheduling_euler_discrete,
    scheduling_euler_ancestral_discrete,
    scheduling_lcm,
):
    module.randn_tensor = fake_randn


def model(x_in: torch.Tensor, t: float) -> torch.Tensor:
    base = torch.tensor([math.cos(1.3 * k + 0.2) for k in range(N)], dtype=torch.float64)
    c = 0.6 + 0.3 * math.cos(t / 170.0)
    d = 0.4 * math.sin(t / 90.0 + 1.0)
    out = x_in.double().flatten() * c + base * d
    return out.float().reshape(SHAPE)


def run(kind: str, config: dict, steps: int, prediction: str = "epsilon") -> dict:
    global current_step
    extra = {"prediction_type": prediction} if kind != "flow_euler" else {}
    if kind == "dpmpp_2m_karras":
        extra["use_karras_sigmas"] = True
    sched = CLASSES[kind].from_config({**config, **extra})
    sched.set_timesteps(steps)
    timesteps = [float(t) for t in sched.timesteps]
    x0 = torch.tensor([1.1 * math.sin(0.9 * k + 0.5) for k in range(N)], dtype=torch.float64)
    # The flow-matching scheduler has neither (SD 3's pipeline starts from plain noise).
    sigma = float(getattr(sched, "init_noise_sigma", 1.0))
    x = (x0 * sigma).float().reshape(SHAPE)
    record = sorted({i for i in range(min(RECORDED_STEPS, steps))} | {steps // 2, steps - 1})
    samples = {}
    for i, t in enumerate(sched.timesteps):
        current_step = i
        x_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = model(x_in, float(t))
        x = sched.step(out, t, x, return_dict=False)[0]
        if i in record:
            samples[str(i)] = x.double().flatten().tolist()
    return {
        "scheduler": kind,
        "prediction_type": prediction,
        "timestep_spacing": config.get("timestep_spacing"),
        "steps_offset": config.get("steps_offset", 0),
        "steps": steps,
        "timesteps": timesteps,
        "init_noise_sigma": sigma,
        "samples": samples,
    }


def main() -> None:
    cases = []
    for spacing in ("linspace", "leading", "trailing"):
        for offset in (0, 1):
            config = {**SD15, "timestep_spacing": spacing, "steps_offset": offset}
            for steps in (7, 13, 30):
                for kind in ("ddim", "ddpm", "euler", "euler_a", "dpmpp_2m", "unipc"):
                    cases.append(run(kind, config, steps))
    # v-prediction (SD 2.x 768) through the same schedules.
    for kind in ("ddim", "ddpm", "euler", "euler_a", "dpmpp_2m", "unipc"):
        cases.append(run(kind, {**SD15, "timestep_spacing": "trailing"}, 13, "v_prediction"))
    # Karras sigmas decide the timesteps themselves; LCM and flow Euler have their own spacing.
    for steps in (7, 13, 30):
        cases.append(run("dpmpp_2m_karras", {**SD15, "timestep_spacing": "linspace"}, steps))
    for steps in (1, 4, 7, 13, 30):
        cases.append(run("lcm", SD15, steps))
    for steps in (7, 13, 30):
        cases.append(run("flow_euler", SD3, steps))
    header = {
        "sd15_config": SD15,
        "sd3_config": SD3,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    # One case a line, so that a rerun's diff shows which cases changed.
    out = sys.stdout
    out.write(json.dumps(header)[:-1] + ', "cases": [\n')
    out.write(",\n".join(json.dumps(c) for c in cases))
    out.write("\n]}\n")

if __name__ == "__main__":
    main()
