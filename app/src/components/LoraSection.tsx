// The LoRAs section of the form (shown when the worker lists LoRAs): a
// searchable list of the worker's LoRAs with their family and trigger words
// (those made for another model family disabled, with the reason), each chosen
// one with its weight and its trigger words to add to the prompt; and the
// embeddings, whose names go into the prompt or the negative prompt.

import type { EmbeddingInfo, LoraApplied, LoraInfo, WorkerInfo } from '@sd-worker/sdk';
import { useId, useState, type ReactNode } from 'react';
import type { FieldErrors } from '../form.js';
import {
  familyMismatch,
  loraField,
  MAX_LORA_WEIGHT,
  MAX_LORAS,
  searchLoras,
  SLIDER_MAX,
  SLIDER_MIN,
  type ChosenLora,
} from '../loras.js';
import type { Loras } from '../use-loras.js';
import { controlProps, FieldError } from './Field.js';

export function LoraSection(props: {
  info: WorkerInfo;
  loras: Loras;
  errors: FieldErrors;
  /** The chosen LoRAs changed: their errors from the last Generate no longer hold. */
  onEdited: () => void;
  /** Appends words to the prompt (a trigger word), or to the negative prompt. */
  onAppend: (words: string, negative: boolean) => void;
}): ReactNode {
  const { info, loras, errors } = props;
  if (loras.available.length === 0 && loras.embeddings.length === 0) return null;
  return (
    <>
      {loras.available.length > 0 && (
        <fieldset className="loras" aria-describedby="loras-hint" data-testid="loras">
          <legend>LoRAs</legend>
          <p className="hint" id="loras-hint">
            Small add-ons that change the model&apos;s style or subject, merged in for each job (up to {MAX_LORAS}, any
            mode).
          </p>
          {loras.chosen.map((c, index) => (
            <ChosenCard
              key={c.name}
              chosen={c}
              index={index}
              lora={loras.available.find((l) => l.name === c.name)}
              errors={errors}
              onChange={(patch) => {
                loras.update(c.name, patch);
                props.onEdited();
              }}
              onRemove={() => {
                loras.remove(c.name);
                props.onEdited();
              }}
              onTrigger={(word) => props.onAppend(word, false)}
            />
          ))}
          <FieldError name="loras" error={errors.loras} />
          <LoraPicker
            info={info}
            loras={loras}
            onPick={(name) => {
              loras.add(name);
              props.onEdited();
            }}
          />
        </fieldset>
      )}
      {loras.embeddings.length > 0 && (
        <EmbeddingList info={info} embeddings={loras.embeddings} onInsert={props.onAppend} />
      )}
    </>
  );
}

function ChosenCard(props: {
  chosen: ChosenLora;
  index: number;
  lora: LoraInfo | undefined;
  errors: FieldErrors;
  onChange: (patch: Partial<ChosenLora>) => void;
  onRemove: () => void;
  onTrigger: (word: string) => void;
}): ReactNode {
  const { chosen, index, lora, errors } = props;
  const field = loraField(index, 'weight');
  const error = errors[field] ?? errors[loraField(index, 'name')];
  const split = chosen.unet_weight !== undefined && chosen.text_encoder_weight !== undefined;
  const splitError = errors[loraField(index, 'unet_weight')] ?? errors[loraField(index, 'text_encoder_weight')];
  const n = Number(chosen.weight);
  const slider = Number.isFinite(n) ? Math.min(SLIDER_MAX, Math.max(SLIDER_MIN, n)) : 1;
  // A new weight is the weight of both parts.
  const setWeight = (weight: string) => props.onChange({ weight, unet_weight: undefined, text_encoder_weight: undefined });
  return (
    <fieldset className="lora-card" data-testid="chosen-lora" data-name={chosen.name}>
      <legend>{chosen.name}</legend>
      <div className={error ? 'field invalid' : 'field'}>
        <label htmlFor={`${field}-slider`}>Weight of {chosen.name}</label>
        <div className="row">
          <input
            id={`${field}-slider`}
            type="range"
            min={SLIDER_MIN}
            max={SLIDER_MAX}
            step={0.05}
            value={slider}
            onChange={(e) => setWeight(e.target.value)}
          />
          <input
            {...controlProps(field, error)}
            className="weight-number"
            type="number"
            inputMode="decimal"
            min={-MAX_LORA_WEIGHT}
            max={MAX_LORA_WEIGHT}
            step={0.05}
            aria-label={`Weight of ${chosen.name}, -${MAX_LORA_WEIGHT} to ${MAX_LORA_WEIGHT}`}
            value={split ? '' : chosen.weight}
            placeholder={split ? 'split' : undefined}
            onChange={(e) => setWeight(e.target.value)}
          />
        </div>
        {split && (
          <p className="hint" data-testid="split-weight">
            UNet {chosen.unet_weight}, text encoders {chosen.text_encoder_weight} (from the PNG); a new weight sets both.
          </p>
        )}
        <p className="hint">Slide 0 to {SLIDER_MAX}, or type any weight from -{MAX_LORA_WEIGHT} to {MAX_LORA_WEIGHT}.</p>
        <FieldError name={field} error={error ?? splitError} />
      </div>
      {!lora && <p className="notice warn">Not on this worker any more.</p>}
      {lora && lora.trigger_words.length > 0 && (
        <div className="trigger-words">
          <span className="hint">Trigger words:</span>{' '}
          {lora.trigger_words.map((w) => (
            <button
              key={w}
              type="button"
              className="chip"
              title="Add to the prompt"
              aria-label={`Add trigger word ${w} to the prompt`}
              onClick={() => props.onTrigger(w)}
            >
              {w}
            </button>
          ))}
        </div>
      )}
      <button type="button" onClick={props.onRemove}>
        Remove {chosen.name}
      </button>
    </fieldset>
  );
}

function LoraPicker(props: { info: WorkerInfo; loras: Loras; onPick: (name: string) => void }): ReactNode {
  const { info, loras } = props;
  const [query, setQuery] = useState('');
  const id = useId();
  const found = searchLoras(loras.available, query);
  const full = loras.chosen.length >= MAX_LORAS;
  return (
    <div className="lora-picker">
      <label htmlFor={`${id}-search`}>Find a LoRA</label>
      <input
        id={`${id}-search`}
        type="search"
        value={query}
        placeholder="name, trigger word or family"
        onChange={(e) => setQuery(e.target.value)}
      />
      <ul className="pick-list" aria-label="LoRAs of this worker">
        {found.map((l) => {
          const mismatch = familyMismatch(l, info);
          const picked = loras.chosen.some((c) => c.name === l.name);
          const reason = mismatch ?? (picked ? 'Chosen.' : full ? `At most ${MAX_LORAS} LoRAs.` : null);
          return (
            <li key={l.name} data-testid="lora-option" data-name={l.name}>
              <button
                type="button"
                disabled={reason !== null}
                aria-describedby={`${id}-${l.name}-about`}
                onClick={() => props.onPick(l.name)}
              >
                Add {l.name}
              </button>
              <span className="muted" id={`${id}-${l.name}-about`}>
                {' '}
                {l.family} · {l.format}
                {l.trigger_words.length > 0 && <> · {l.trigger_words.slice(0, 5).join(', ')}</>}
                {mismatch && <strong className="reason"> — {mismatch}</strong>}
              </span>
            </li>
          );
        })}
        {found.length === 0 && <li className="muted">No LoRA matches “{query}”.</li>}
      </ul>
    </div>
  );
}

function EmbeddingList(props: {
  info: WorkerInfo;
  embeddings: EmbeddingInfo[];
  onInsert: (name: string, negative: boolean) => void;
}): ReactNode {
  return (
    <fieldset className="embeddings" data-testid="embeddings">
      <legend>Embeddings</legend>
      <p className="hint">Writing an embedding&apos;s name in a prompt uses it.</p>
      <ul className="pick-list">
        {props.embeddings.map((e) => {
          const mismatch = familyMismatch(e, props.info);
          return (
            <li key={e.name} data-testid="embedding-option" data-name={e.name}>
              <strong>{e.name}</strong>{' '}
              <span className="muted">
                {e.vectors} vector{e.vectors === 1 ? '' : 's'} · {e.family}
                {mismatch && <strong className="reason"> — {mismatch}</strong>}
              </span>{' '}
              <button
                type="button"
                disabled={mismatch !== null}
                aria-label={`Add ${e.name} to the prompt`}
                onClick={() => props.onInsert(e.name, false)}
              >
                + prompt
              </button>{' '}
              <button
                type="button"
                disabled={mismatch !== null}
                aria-label={`Add ${e.name} to the negative prompt`}
                onClick={() => props.onInsert(e.name, true)}
              >
                + negative
              </button>
            </li>
          );
        })}
      </ul>
    </fieldset>
  );
}

/** How much of each of the job's LoRAs matched the model (the `complete` event's counts). */
export function LoraMatches({ loras }: { loras: LoraApplied[] }): ReactNode {
  if (loras.length === 0) return null;
  return (
    <ul className="lora-matches" aria-label="LoRAs applied" data-testid="lora-matches">
      {loras.map((l) => (
        <li
          key={l.name}
          data-name={l.name}
          className={l.matched_tensors < l.tensors ? 'notice warn' : undefined}
          title={`hash ${l.hash}`}
        >
          <strong>{l.name}</strong>: {l.matched_tensors} of {l.tensors} tensors matched{' '}
          <span className="muted">
            (UNet {l.unet_weight}, text encoders {l.text_encoder_weight})
          </span>
        </li>
      ))}
    </ul>
  );
}
