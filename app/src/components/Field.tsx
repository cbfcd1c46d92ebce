// A labelled control with its error message beside it (aria-describedby).

import type { ReactNode } from 'react';

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
      {error}
    </p>
  );
}

export function Field(props: {
  name: string;
  label: string;
  error: string | undefined;
  hint?: ReactNode;
  children: ReactNode;
}): ReactNode {
  return (
    <div className={props.error ? 'field invalid' : 'field'}>
      <label htmlFor={fieldId(props.name)}>{props.label}</label>
      {props.children}
      {props.hint && <p className="hint">{props.hint}</p>}
      <FieldError name={props.name} error={props.error} />
    </div>
  );
}
