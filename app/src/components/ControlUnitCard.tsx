// One ControlNet unit: its control image, ControlNet, preprocessor (with the
// thresholds that one reads), map preview, strength, and the part of the steps
// it acts in.

import type { PreprocessorName } from '@sd-worker/sdk';
import { useState, type ReactNode } from 'react';
import { MAX_CONDITIONING_SCALE, ORDER_ERROR, THRESHOLDS, unitField, type ControlUnit } from '../controlnet.js';
import type { FieldErrors } from '../form.js';
import { loadImage } from '../lib/images.js';
import { ControlMapPreview } from './ControlMapPreview.js';
import { controlProps, Field, FieldError, fieldId } from './Field.js';
import { ImageInput } from './ImageInput.js';

export function ControlUnitCard(props: {
  unit: ControlUnit;
  index: number;
  controlnets: string[];
  preprocessors: PreprocessorName[];
  /** Errors of the last Generate (the studio's or the worker's), by `unitField` name. */
  errors: FieldErrors;
  onChange: (patch: Partial<ControlUnit>) => void;
  onRemove: () => void;
  workerUrl: string;
}): ReactNode {
  const { unit, index, onChange } = props;
  const field = (key: string) => unitField(index, key);
  // Errors found here (a file that is no image, a threshold the preview was refused) until the field changes.
  const [local, setLocal] = useState<FieldErrors>({});
  const errors = { ...props.errors, ...local };
  if (Number(unit.guidance_start) >= Number(unit.guidance_end)) errors[field('guidance_end')] ??= ORDER_ERROR;
  const change = (patch: Partial<ControlUnit>) => {
    setLocal((l) => Object.fromEntries(Object.entries(l).filter(([k]) => !Object.keys(patch).some((p) => k === field(p)))));
    onChange(patch);
  };
  const onFile = async (file: File) => {
    try {
      change({ image: await loadImage(file, file.name) });
    } catch (e) {
      setLocal((l) => ({ ...l, [field('image')]: e instanceof Error ? e.message : String(e) }));
    }
  };
  const n = index + 1;

  return (
    <fieldset className="control-unit" data-testid="control-unit">
      <legend>ControlNet unit {n}</legend>
      <ImageInput
        image={unit.image}
        onFile={(f) => void onFile(f)}
        onClear={() => change({ image: null })}
        error={errors[field('image')]}
        showPreview
        name={field('image')}
        label="Control image"
        alt={`Control image of unit ${n}`}
      />
      <div className="control-grid">
        <Field name={field('model')} label="ControlNet model" error={errors[field('model')]}>
          <select
            {...controlProps(field('model'), errors[field('model')])}
            value={unit.model}
            onChange={(e) => change({ model: e.target.value })}
          >
            {props.controlnets.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </Field>
        <Field
          name={field('preprocessor')}
          label="Preprocessor"
          error={errors[field('preprocessor')]}
          hint={unit.preprocessor === 'none' ? 'none: the image is already a control map' : undefined}
        >
          <select
            {...controlProps(field('preprocessor'), errors[field('preprocessor')])}
            value={unit.preprocessor}
            onChange={(e) => change({ preprocessor: e.target.value as PreprocessorName })}
          >
            {props.preprocessors.map((name) => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </Field>
        {(THRESHOLDS[unit.preprocessor] ?? []).map((t) => (
          <Field key={t.key} name={field(t.key)} label={t.label} error={errors[field(t.key)]} hint="0 to 255">
            <input
              {...controlProps(field(t.key), errors[field(t.key)])}
              type="number"
              inputMode="numeric"
              min={0}
              max={255}
              step={1}
              value={unit[t.key]}
              onChange={(e) => change({ [t.key]: e.target.value })}
            />
          </Field>
        ))}
      </div>
      <ControlMapPreview
        unit={unit}
        index={index}
        workerUrl={props.workerUrl}
        onErrors={(found) => setLocal((l) => ({ ...l, ...found }))}
      />
      <Slider
        name={field('conditioning_scale')}
        label="Control strength"
        min={0}
        max={MAX_CONDITIONING_SCALE}
        value={unit.conditioning_scale}
        onChange={(v) => change({ conditioning_scale: v })}
        error={errors[field('conditioning_scale')]}
        hint="How strongly the map steers the image; 1 is the ControlNet's own weight"
      />
      <div className="control-grid">
        <Slider
          name={field('guidance_start')}
          label="Start"
          min={0}
          max={1}
          value={unit.guidance_start}
          onChange={(v) => change({ guidance_start: v })}
          error={errors[field('guidance_start')]}
          hint="Fraction of the steps before the unit acts"
        />
        <Slider
          name={field('guidance_end')}
          label="End"
          min={0}
          max={1}
          value={unit.guidance_end}
          onChange={(v) => change({ guidance_end: v })}
          error={errors[field('guidance_end')]}
          hint="Fraction of the steps after which it stops"
        />
      </div>
      <button type="button" className="danger" onClick={props.onRemove}>
        Remove unit {n}
      </button>
    </fieldset>
  );
}

/** A 0.05-step slider, its value shown beside its label (outside it: the label is the control's whole name). */
function Slider(props: {
  name: string;
  label: string;
  min: number;
  max: number;
  value: string;
  onChange: (value: string) => void;
  error: string | undefined;
  hint: string;
}): ReactNode {
  return (
    <div className={props.error ? 'field invalid' : 'field'}>
      <div className="slider-head">
        <label htmlFor={fieldId(props.name)}>{props.label}</label>
        <output htmlFor={fieldId(props.name)}>{props.value}</output>
      </div>
      <input
        {...controlProps(props.name, props.error)}
        type="range"
        min={props.min}
        max={props.max}
        step={0.05}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
      />
      <p className="hint">{props.hint}</p>
      <FieldError name={props.name} error={props.error} />
    </div>
  );
}
