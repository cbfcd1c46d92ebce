// A unit's "Preview map": the control map the worker computes from the unit's
// image with its preprocessor and thresholds (`POST /v1/preprocess`), shown
// until one of those changes.

import { useSdClient } from '@sd-worker/react';
import { toSdError, type PreprocessRequest } from '@sd-worker/sdk';
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { previewRequest, unitField, type ControlUnit } from '../controlnet.js';
import type { FieldErrors } from '../form.js';
import { errorText } from '../lib/errors.js';
import { CodeText } from './CodeText.js';

type Preview =
  | { state: 'idle' }
  | { state: 'loading'; request: PreprocessRequest }
  | { state: 'done'; request: PreprocessRequest; url: string }
  | { state: 'failed'; message: string };

/** Whether a map was computed from what the unit holds now. */
function sameRequest(a: PreprocessRequest, b: PreprocessRequest | null): boolean {
  return (
    b !== null &&
    a.image === b.image &&
    a.preprocessor === b.preprocessor &&
    a.low_threshold === b.low_threshold &&
    a.high_threshold === b.high_threshold &&
    a.threshold === b.threshold
  );
}

export function ControlMapPreview(props: {
  unit: ControlUnit;
  index: number;
  /** Errors of the unit's fields (no image, a threshold the worker refused). */
  onErrors: (errors: FieldErrors) => void;
  workerUrl: string;
}): ReactNode {
  const { unit, index, onErrors } = props;
  const client = useSdClient();
  const [preview, setPreview] = useState<Preview>({ state: 'idle' });
  const inFlight = useRef<AbortController | null>(null);

  // The object URL of a map lives until the next map or the unit goes.
  const shownUrl = preview.state === 'done' ? preview.url : null;
  useEffect(() => (shownUrl ? () => URL.revokeObjectURL(shownUrl) : undefined), [shownUrl]);
  useEffect(() => () => inFlight.current?.abort(), []);

  const current = previewRequest(unit, index).request;
  const stale = (preview.state === 'done' || preview.state === 'loading') && !sameRequest(preview.request, current);

  const run = async () => {
    const { request, errors } = previewRequest(unit, index);
    onErrors(errors);
    if (!request) return;
    inFlight.current?.abort();
    const controller = new AbortController();
    inFlight.current = controller;
    setPreview({ state: 'loading', request });
    try {
      const map = await client.preprocess(request, { signal: controller.signal });
      if (!controller.signal.aborted) setPreview({ state: 'done', request, url: URL.createObjectURL(map) });
    } catch (e) {
      const error = toSdError(e);
      if (error.code === 'aborted') return;
      if (error.field) {
        onErrors({ [unitField(index, error.field)]: error.message });
        setPreview({ state: 'idle' });
      } else {
        setPreview({ state: 'failed', message: errorText(error, props.workerUrl) });
      }
    }
  };

  const label = `Control map of unit ${index + 1}`;
  return (
    <div className="control-map" aria-live="polite">
      <button type="button" onClick={() => void run()} disabled={preview.state === 'loading' && !stale}>
        {preview.state === 'loading' && !stale ? 'Computing the map…' : 'Preview map'}
      </button>
      {preview.state === 'done' && !stale && <img src={preview.url} alt={label} className="input-preview" />}
      {preview.state === 'done' && stale && <p className="hint">The image or preprocessor changed: preview the map again.</p>}
      {preview.state === 'failed' && (
        <p className="field-error" role="alert">
          <CodeText text={preview.message} />
        </p>
      )}
    </div>
  );
}
