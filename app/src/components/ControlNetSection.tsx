// The ControlNet section of the form: shown when the worker has ControlNets
// (/v1/info `controlnets`); up to `MAX_UNITS` units, each sent with every
// operation.

import type { WorkerInfo } from '@sd-worker/sdk';
import { Suspense, type ReactNode } from 'react';
import { controlnetNames, MAX_UNITS, preprocessorNames, type ControlUnit } from '../controlnet.js';
import type { FieldErrors } from '../form.js';
import type { ControlUnits } from '../use-control-units.js';
import { ControlUnitCard } from './ControlUnitCard.js';
import { FieldError } from './Field.js';

export function ControlNetSection(props: {
  info: WorkerInfo;
  controls: ControlUnits;
  errors: FieldErrors;
  /** A unit changed or went: its errors from the last Generate no longer hold. */
  onEdited: (index: number | null) => void;
  workerUrl: string;
}): ReactNode {
  const { info, controls, errors } = props;
  const controlnets = controlnetNames(info);
  if (controlnets.length === 0) return null;
  const preprocessors = preprocessorNames(info);
  const { units } = controls;
  const full = units.length >= MAX_UNITS;

  return (
    <fieldset className="controlnets" aria-describedby="controlnets-hint">
      <legend>ControlNet</legend>
      <p className="hint" id="controlnets-hint">
        Steer the composition with control maps (edges, depth, scribbles): up to {MAX_UNITS} units, sent with every
        mode.
      </p>
      {/* The client is ready by the time the studio shows; Suspense only covers its first read. */}
      <Suspense fallback={null}>
        {units.map((unit: ControlUnit, index) => (
          <ControlUnitCard
            key={unit.key}
            unit={unit}
            index={index}
            controlnets={controlnets}
            preprocessors={preprocessors}
            errors={errors}
            workerUrl={props.workerUrl}
            onChange={(patch) => {
              controls.update(unit.key, patch);
              props.onEdited(index);
            }}
            onRemove={() => {
              controls.remove(unit.key);
              props.onEdited(null);
            }}
          />
        ))}
      </Suspense>
      <div className="row wrap">
        <button type="button" onClick={controls.add} disabled={full}>
          Add ControlNet unit
        </button>
        {full && <span className="hint">At most {MAX_UNITS} units.</span>}
      </div>
      <FieldError name="controlnets" error={errors.controlnets} />
    </fieldset>
  );
}
