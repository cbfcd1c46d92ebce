// The parameters, driven by the worker's /v1/info: steps, guidance, size
// presets, the hires fix, seed (random / fixed / last), number of images,
// scheduler, and the decoders (with TAESD).

import { schedulerLabel, type UpscalerInfo, type WorkerInfo } from '@sd-worker/sdk';
import { useMemo, type ReactNode } from 'react';
import type { FieldErrors, FormState, Mode } from '../form.js';
import { sizePresets } from '../lib/sizes.js';
import { DecodeSection } from './DecodeSection.js';
import { controlProps, Field, FieldError, fieldId } from './Field.js';
import { HiresSection } from './HiresSection.js';

export function ParamsPanel(props: {
  info: WorkerInfo;
  mode: Mode;
  form: FormState;
  set: (patch: Partial<FormState>) => void;
  errors: FieldErrors;
  lastSeed: number | null;
  /** `GET /v1/upscalers` (empty until read). */
  upscalers?: readonly UpscalerInfo[];
}): ReactNode {
  const { info, mode, form, set, errors, lastSeed, upscalers = [] } = props;
  const { limits } = info;
  const presets = useMemo(() => sizePresets(info), [info]);
  const matching = mode !== 'txt2img' && form.matchInput;
  const preset = matching
    ? 'input'
    : (presets.find((p) => String(p.width) === form.width && String(p.height) === form.height)?.label ?? 'custom');

  return (
    <div className="params-body">
      <Field name="steps" label="Steps" error={errors.steps} hint={`1 to ${limits.max_steps}`}>
        <div className="range">
          <input
            type="range"
            min={1}
            max={limits.max_steps}
            value={Number(form.steps) || 1}
            onChange={(e) => set({ steps: e.target.value })}
            aria-label="Steps slider"
            tabIndex={-1}
          />
          <input
            {...controlProps('steps', errors.steps)}
            type="number"
            inputMode="numeric"
            min={1}
            max={limits.max_steps}
            value={form.steps}
            onChange={(e) => set({ steps: e.target.value })}
          />
        </div>
      </Field>

      <Field
        name="guidance_scale"
        label="Guidance scale"
        a1111="CFG scale"
        error={errors.guidance_scale}
        hint="How closely to follow the prompt; 1 or less skips the negative prompt"
      >
        <div className="range">
          <input
            type="range"
            min={limits.min_guidance_scale}
            max={limits.max_guidance_scale}
            step={0.5}
            value={Number(form.guidance_scale) || 0}
            onChange={(e) => set({ guidance_scale: e.target.value })}
            aria-label="Guidance scale slider"
            tabIndex={-1}
          />
          <input
            {...controlProps('guidance_scale', errors.guidance_scale)}
            type="number"
            inputMode="decimal"
            min={limits.min_guidance_scale}
            max={limits.max_guidance_scale}
            step={0.5}
            value={form.guidance_scale}
            onChange={(e) => set({ guidance_scale: e.target.value })}
          />
        </div>
      </Field>

      <fieldset className="field">
        <legend>Size</legend>
        <label htmlFor="size-preset" className="visually-hidden">
          Size preset
        </label>
        <select
          id="size-preset"
          value={preset}
          onChange={(e) => {
            const v = e.target.value;
            if (v === 'input') set({ matchInput: true });
            else if (v === 'custom') set({ matchInput: false });
            else {
              const p = presets.find((x) => x.label === v);
              if (p) set({ width: String(p.width), height: String(p.height), matchInput: false });
            }
          }}
        >
          {mode !== 'txt2img' && <option value="input">Same as the input image</option>}
          {presets.map((p) => (
            <option key={p.label} value={p.label}>
              {p.label}
            </option>
          ))}
          <option value="custom">Custom</option>
        </select>
        {!matching && (
          <div className="size-inputs">
            <div>
              <label htmlFor={fieldId('width')}>Width</label>
              <input
                {...controlProps('width', errors.width)}
                type="number"
                inputMode="numeric"
                step={limits.size_multiple}
                min={limits.min_size}
                max={limits.max_size}
                value={form.width}
                onChange={(e) => set({ width: e.target.value })}
              />
            </div>
            <span aria-hidden="true">×</span>
            <div>
              <label htmlFor={fieldId('height')}>Height</label>
              <input
                {...controlProps('height', errors.height)}
                type="number"
                inputMode="numeric"
                step={limits.size_multiple}
                min={limits.min_size}
                max={limits.max_size}
                value={form.height}
                onChange={(e) => set({ height: e.target.value })}
              />
            </div>
          </div>
        )}
        <FieldError name="width" error={errors.width} />
        <FieldError name="height" error={errors.height} />
        <p className="hint">
          Multiples of {limits.size_multiple}, {limits.min_size} to {limits.max_size}, at most{' '}
          {limits.max_pixels.toLocaleString('en')} pixels
        </p>
      </fieldset>

      {mode === 'txt2img' && (
        <HiresSection
          info={info}
          hires={form.hires}
          baseWidth={form.width}
          baseHeight={form.height}
          upscalers={upscalers}
          set={(patch) => set({ hires: { ...form.hires, ...patch } })}
          errors={errors}
        />
      )}

      <fieldset className="field">
        <legend>Seed</legend>
        <div className="radios" role="radiogroup" aria-label="Seed">
          {(
            [
              ['random', 'Random'],
              ['fixed', 'Fixed'],
              ['last', 'Reuse last'],
            ] as const
          ).map(([value, label]) => (
            <label key={value} className="radio">
              <input
                type="radio"
                name="seedMode"
                value={value}
                checked={form.seedMode === value}
                onChange={() => set({ seedMode: value })}
              />
              {label}
            </label>
          ))}
        </div>
        {form.seedMode === 'fixed' && (
          <>
            <label htmlFor={fieldId('seed')} className="visually-hidden">
              Seed value
            </label>
            <input
              {...controlProps('seed', errors.seed)}
              type="number"
              inputMode="numeric"
              min={0}
              max={limits.max_seed}
              value={form.seed}
              placeholder="e.g. 42"
              onChange={(e) => set({ seed: e.target.value })}
            />
          </>
        )}
        <p className="hint">
          Last seed:{' '}
          {lastSeed === null ? (
            'none yet'
          ) : (
            <button
              type="button"
              className="link"
              onClick={() => set({ seedMode: 'fixed', seed: String(lastSeed) })}
              title="Use it as a fixed seed"
            >
              <span data-testid="last-seed">{lastSeed}</span>
            </button>
          )}
        </p>
        <FieldError name="seed" error={errors.seed} />
      </fieldset>

      <Field name="num_images" label="Images" error={errors.num_images} hint={`1 to ${limits.max_images}`}>
        <input
          {...controlProps('num_images', errors.num_images)}
          type="number"
          inputMode="numeric"
          min={1}
          max={limits.max_images}
          value={form.num_images}
          onChange={(e) => set({ num_images: e.target.value })}
        />
      </Field>

      <Field name="scheduler" label="Scheduler" a1111="Sampler" error={errors.scheduler}>
        <select
          {...controlProps('scheduler', errors.scheduler)}
          value={form.scheduler}
          onChange={(e) => set({ scheduler: e.target.value })}
        >
          {info.schedulers.map((s) => (
            <option key={s} value={s}>
              {schedulerLabel(s)}
              {s === info.defaults.scheduler ? ' (model default)' : ''}
            </option>
          ))}
        </select>
      </Field>

      <Field name="rng" label="Noise" error={errors.rng} hint="PyTorch CPU: the same seed gives diffusers' and ComfyUI's picture; AUTOMATIC1111 NV: A1111's (its GPU and NV sources)">
        <select
          {...controlProps('rng', errors.rng)}
          value={form.rng}
          onChange={(e) => set({ rng: e.target.value === 'torch-cpu' || e.target.value === 'nv' ? e.target.value : 'chacha' })}
        >
          <option value="chacha">Worker (ChaCha)</option>
          <option value="torch-cpu">PyTorch CPU</option>
          <option value="nv">AUTOMATIC1111 NV</option>
        </select>
      </Field>

      {mode === 'inpaint' && (
        <Field name="mask_blur" label="Mask blur" error={errors.mask_blur} hint="Feathers the seam, in pixels (0 to 64)">
          <input
            {...controlProps('mask_blur', errors.mask_blur)}
            type="number"
            inputMode="numeric"
            min={0}
            max={64}
            value={form.mask_blur}
            onChange={(e) => set({ mask_blur: e.target.value })}
          />
        </Field>
      )}

      {info.taesd && <DecodeSection form={form} set={set} errors={errors} />}

      <p className="hint model-line">
        {info.model.id} · {info.device} · {info.dtype} · native {info.model.native_width}×{info.model.native_height}
      </p>
    </div>
  );
}
