// How latents become pixels, on a worker with TAESD (`/v1/info` `taesd`):
// the previews' decoder, and TAESD for the final images (fast drafts).

import type { PreviewMethod } from '@sd-worker/sdk';
import type { ReactNode } from 'react';
import type { FieldErrors, FormState } from '../form.js';
import { controlProps, Field, FieldError } from './Field.js';

/** Every `PreviewMethod` of the contract (the compiler checks the keys). */
const PREVIEW_LABELS: Record<PreviewMethod, string> = {
  taesd: 'TAESD (sharp, full size)',
  vae: 'VAE (soft, reduced size)',
};

function isPreviewMethod(v: string): v is PreviewMethod {
  return v in PREVIEW_LABELS;
}

export function DecodeSection(props: {
  form: FormState;
  set: (patch: Partial<FormState>) => void;
  errors: FieldErrors;
}): ReactNode {
  const { form, set, errors } = props;
  return (
    <>
      <Field name="preview_method" label="Preview method" error={errors.preview_method}>
        <select
          {...controlProps('preview_method', errors.preview_method)}
          value={form.preview_method}
          onChange={(e) => set({ preview_method: isPreviewMethod(e.target.value) ? e.target.value : '' })}
        >
          <option value="">Worker default (TAESD)</option>
          {Object.entries(PREVIEW_LABELS).map(([value, label]) => (
            <option key={value} value={value}>
              {label}
            </option>
          ))}
        </select>
      </Field>
      <div className={errors.vae ? 'field invalid' : 'field'}>
        <label className="inline">
          <input
            {...controlProps('vae', errors.vae)}
            type="checkbox"
            checked={form.fastDecode}
            onChange={(e) => set({ fastDecode: e.target.checked })}
          />
          Fast decode (TAESD)
        </label>
        <p className="hint">Final images by the tiny autoencoder: much faster, slightly softer (drafts)</p>
        <FieldError name="vae" error={errors.vae} />
      </div>
    </>
  );
}
