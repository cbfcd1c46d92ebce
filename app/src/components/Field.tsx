// A labelled control with its error message beside it (aria-describedby).

import type { ReactNode } from 'react';
import { CodeText } from './CodeText.js';

export const fieldId = (name: string) => `field-${name}`;
export const errorId = (name: string) => `error-${name}`;

/** Props that tie a control to its label and error message. */
export function controlProps(name: string, error: string | undefined) {
  return {
    id: fieldId(name),
    name,
    'aria-invalid': error ? true : undefined,
    'aria-describedby': error ? errorId(name) : undefined,
  } as const;
}

export function FieldError({ name, error }: { name: string; error: string | undefined }): ReactNode {
  if (!error) return null;
  return (
    <p className="field-error" id={errorId(name)} data-field={name}>
      <CodeText text={error} />
    </p>
  );
}

/** AUTOMATIC1111's name of a setting, beside the studio's label, for A1111 users to find it. */
export function A1111Name({ name }: { name: string }): ReactNode {
  return (
    <span className="a1111-name" title="Its name in AUTOMATIC1111">
      A1111: {name}
    </span>
  );
}

export function Field(props: {
  name: string;
  label: string;
  error: string | undefined;
  hint?: ReactNode;
  /** The setting's name in AUTOMATIC1111, when it differs. */
  a1111?: string;
  children: ReactNode;
}): ReactNode {
  const label = <label htmlFor={fieldId(props.name)}>{props.label}</label>;
  return (
    <div className={props.error ? 'field invalid' : 'field'}>
      {props.a1111 ? (
        <div className="label-row">
          {label}
          <A1111Name name={props.a1111} />
        </div>
      ) : (
        label
      )}
      {props.children}
      {props.hint && <p className="hint">{props.hint}</p>}
      <FieldError name={props.name} error={props.error} />
    </div>
  );
}
