// The hires fix (text to image): a first pass at the base size, upscaled (in
// latent space or by one of the worker's upscalers), then repainted at the
// target size. The upscalers are the contract's latent ones and /v1/upscalers'.

import { MAX_HIRES_SCALE, type UpscalerInfo, type WorkerInfo } from '@sd-worker/sdk';
import type { ReactNode } from 'react';
import type { FieldErrors } from '../form.js';
import { hiresTarget, hiresUpscalerOptions, type HiresForm } from '../hires.js';
import { controlProps, Field, FieldError, fieldId } from './Field.js';

export function HiresSection(props: {
  info: WorkerInfo;
  hires: HiresForm;
  /** The first pass's size, as typed. */
  baseWidth: string;
  baseHeight: string;
  upscalers: readonly UpscalerInfo[];
  set: (patch: Partial<HiresForm>) => void;
  errors: FieldErrors;
}): ReactNode {
  const { info, hires, baseWidth, baseHeight, upscalers, set, errors } = props;
  const { limits } = info;
  const scale = Number(hires.scale);
  const target =
    Number(baseWidth) > 0 && Number(baseHeight) > 0 && scale > 0
      ? hiresTarget(Number(baseWidth), Number(baseHeight), scale, limits.size_multiple)
      : null;

  return (
    <fieldset className="field hires" data-testid="hires">
      <legend>Hires fix</legend>
      <label className="inline">
        <input
          {...controlProps('hires.enabled', undefined)}
          type="checkbox"
          checked={hires.enabled}
          onChange={(e) => set({ enabled: e.target.checked })}
        />
        Upscale and repaint at a larger size
      </label>
      <FieldError name="hires" error={errors.hires} />
      {hires.enabled && (
        <>
          <div className="radios" role="radiogroup" aria-label="Hires size">
            {(
              [
                ['scale', 'Scale by'],
                ['size', 'Resize to'],
              ] as const
            ).map(([value, label]) => (
              <label key={value} className="radio">
                <input
                  type="radio"
                  name="hiresSizeMode"
                  value={value}
                  checked={hires.sizeMode === value}
                  onChange={() => set({ sizeMode: value })}
                />
                {label}
              </label>
            ))}
          </div>
          {hires.sizeMode === 'scale' ? (
            <Field
              name="hires.scale"
              label="Hires scale"
              error={errors['hires.scale']}
              hint={target ? `Target ${target.width}×${target.height}` : `1 to ${MAX_HIRES_SCALE}`}
            >
              <div className="range">
                <input
                  type="range"
                  min={1}
                  max={MAX_HIRES_SCALE}
                  step={0.05}
                  value={scale || 1}
                  onChange={(e) => set({ scale: e.target.value })}
                  aria-label="Hires scale slider"
                  tabIndex={-1}
                />
                <input
                  {...controlProps('hires.scale', errors['hires.scale'])}
                  type="number"
                  inputMode="decimal"
                  min={1}
                  max={MAX_HIRES_SCALE}
                  step={0.05}
                  value={hires.scale}
                  onChange={(e) => set({ scale: e.target.value })}
                />
              </div>
            </Field>
          ) : (
            <div className="size-inputs">
              <div>
                <label htmlFor={fieldId('hires.width')}>Hires width</label>
                <input
                  {...controlProps('hires.width', errors['hires.width'])}
                  type="number"
                  inputMode="numeric"
                  step={limits.size_multiple}
                  min={limits.min_size}
                  max={limits.max_size}
                  value={hires.width}
                  onChange={(e) => set({ width: e.target.value })}
                />
              </div>
              <span aria-hidden="true">×</span>
              <div>
                <label htmlFor={fieldId('hires.height')}>Hires height</label>
                <input
                  {...controlProps('hires.height', errors['hires.height'])}
                  type="number"
                  inputMode="numeric"
                  step={limits.size_multiple}
                  min={limits.min_size}
                  max={limits.max_size}
                  value={hires.height}
                  onChange={(e) => set({ height: e.target.value })}
                />
              </div>
              <FieldError name="hires.width" error={errors['hires.width']} />
              <FieldError name="hires.height" error={errors['hires.height']} />
            </div>
          )}
          <Field name="hires.upscaler" label="Upscaler" error={errors['hires.upscaler']}>
            <select
              {...controlProps('hires.upscaler', errors['hires.upscaler'])}
              value={hires.upscaler}
              onChange={(e) => set({ upscaler: e.target.value })}
            >
              {hiresUpscalerOptions(upscalers).map((o) => (
                <option key={o.value} value={o.value}>
                  {o.label}
                </option>
              ))}
            </select>
          </Field>
          <Field name="hires.steps" label="Hires steps" error={errors['hires.steps']} hint="0: the same as Steps">
            <input
              {...controlProps('hires.steps', errors['hires.steps'])}
              type="number"
              inputMode="numeric"
              min={0}
              max={limits.max_steps}
              value={hires.steps}
              onChange={(e) => set({ steps: e.target.value })}
            />
          </Field>
          <Field
            name="hires.denoising_strength"
            label="Denoising strength"
            error={errors['hires.denoising_strength']}
            hint="How much the second pass repaints"
          >
            <div className="range">
              <input
                type="range"
                min={0}
                max={1}
                step={0.05}
                value={Number(hires.denoising_strength) || 0}
                onChange={(e) => set({ denoising_strength: e.target.value })}
                aria-label="Denoising strength slider"
                tabIndex={-1}
              />
              <input
                {...controlProps('hires.denoising_strength', errors['hires.denoising_strength'])}
                type="number"
                inputMode="decimal"
                min={0}
                max={1}
                step={0.05}
                value={hires.denoising_strength}
                onChange={(e) => set({ denoising_strength: e.target.value })}
              />
            </div>
          </Field>
        </>
      )}
    </fieldset>
  );
}
