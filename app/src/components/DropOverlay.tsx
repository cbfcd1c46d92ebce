// Shown while a file is dragged over the page: what dropping it does.

import type { ReactNode } from 'react';
import type { Mode } from '../form.js';

export function dropHint(mode: Mode): string {
  return mode === 'txt2img'
    ? 'Drop a PNG to read its generation parameters'
    : 'Drop an image to use it as the input image (a PNG’s generation parameters are read too)';
}

export function DropOverlay(props: { active: boolean; mode: Mode }): ReactNode {
  if (!props.active) return null;
  return (
    <div className="drop-overlay" data-testid="drop-overlay" aria-hidden="true">
      <p>{dropHint(props.mode)}</p>
    </div>
  );
}
