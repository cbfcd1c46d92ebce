// The ControlNet section (jsdom): shown only for a worker with ControlNets,
// units added and removed, the thresholds of the chosen preprocessor only, and
// "Preview map" through the SDK's `preprocess` (a stand-in client here; the
// real worker answers it in the end-to-end test).

import { SdProvider } from '@sd-worker/react';
import { SdError, type Client, type PreprocessRequest, type WorkerInfo } from '@sd-worker/sdk';
import { act, cleanup, fireEvent, render, screen, within } from '@testing-library/react';
import { useState, type ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ControlNetSection } from '../src/components/ControlNetSection.js';
import { newUnit, ORDER_ERROR, type ControlUnit } from '../src/controlnet.js';
import type { ControlUnits } from '../src/use-control-units.js';
import { useControlUnits } from '../src/use-control-units.js';
import { CN_INFO, DOT, INFO } from './fixtures.js';

afterEach(cleanup);
beforeEach(() => {
  URL.createObjectURL = vi.fn(() => 'blob:control-map');
  URL.revokeObjectURL = vi.fn();
});

function fakeClient(preprocess: (r: PreprocessRequest) => Promise<Blob>): Client {
  return { preprocess: vi.fn(preprocess) } as unknown as Client;
}

/** The section over the studio's own unit state. */
function WithHook({ info }: { info: WorkerInfo }): ReactNode {
  const controls = useControlUnits(info);
  return <ControlNetSection info={info} controls={controls} errors={{}} onEdited={() => {}} workerUrl="http://w" />;
}

/** The section over fixed units (images already loaded: jsdom decodes none). */
function WithUnits(props: { units: ControlUnit[]; errors?: Record<string, string> }): ReactNode {
  const [units, setUnits] = useState(props.units);
  const controls: ControlUnits = {
    units,
    add: () => setUnits((u) => [...u, newUnit(CN_INFO)]),
    remove: (key) => setUnits((u) => u.filter((x) => x.key !== key)),
    update: (key, patch) => setUnits((u) => u.map((x) => (x.key === key ? { ...x, ...patch } : x))),
  };
  return (
    <ControlNetSection info={CN_INFO} controls={controls} errors={props.errors ?? {}} onEdited={() => {}} workerUrl="http://w" />
  );
}

const unitGroup = (n: number) => screen.getByRole('group', { name: `ControlNet unit ${n}` });

describe('ControlNetSection', () => {
  it('is absent when the worker has no ControlNet', () => {
    render(
      <SdProvider client={fakeClient(async () => new Blob())}>
        <WithHook info={INFO} />
      </SdProvider>,
    );
    expect(screen.queryByRole('group', { name: 'ControlNet' })).toBeNull();
  });

  it('adds up to four units, offering the worker’s ControlNets and preprocessors, and removes them', async () => {
    render(
      <SdProvider client={fakeClient(async () => new Blob())}>
        <WithHook info={CN_INFO} />
      </SdProvider>,
    );
    const add = screen.getByRole('button', { name: 'Add ControlNet unit' });
    for (let i = 0; i < 4; i++) await act(async () => fireEvent.click(add));
    expect(screen.getAllByTestId('control-unit')).toHaveLength(4);
    expect((add as HTMLButtonElement).disabled).toBe(true);

    const first = within(unitGroup(1));
    const models = [...(first.getByLabelText('ControlNet model') as HTMLSelectElement).options].map((o) => o.value);
    expect(models).toEqual(['tiny-canny', 'tiny-scribble']);
    const preprocessors = [...(first.getByLabelText('Preprocessor') as HTMLSelectElement).options].map((o) => o.value);
    expect(preprocessors).toEqual(['none', 'canny', 'depth', 'invert', 'scribble']);
    expect(first.getByLabelText('Control strength')).toMatchObject({ type: 'range', min: '0', max: '2', step: '0.05', value: '1' });
    expect(first.getByLabelText('Start')).toMatchObject({ min: '0', max: '1', value: '0' });
    expect(first.getByLabelText('End')).toMatchObject({ min: '0', max: '1', value: '1' });
    expect(first.getByLabelText('Control image')).toMatchObject({ type: 'file' });

    await act(async () => fireEvent.click(within(unitGroup(2)).getByRole('button', { name: 'Remove unit 2' })));
    expect(screen.getAllByTestId('control-unit')).toHaveLength(3);
    expect((add as HTMLButtonElement).disabled).toBe(false);
  });

  it('shows the thresholds of the chosen preprocessor only, and refuses a start after the end as it happens', async () => {
    render(
      <SdProvider client={fakeClient(async () => new Blob())}>
        <WithUnits units={[{ ...newUnit(CN_INFO), image: DOT }]} />
      </SdProvider>,
    );
    const unit = within(unitGroup(1));
    const pick = (name: string) => fireEvent.change(unit.getByLabelText('Preprocessor'), { target: { value: name } });
    expect(unit.queryByLabelText('Low threshold')).toBeNull();
    pick('canny');
    expect(unit.getByLabelText('Low threshold')).toMatchObject({ value: '100' });
    expect(unit.getByLabelText('High threshold')).toMatchObject({ value: '200' });
    expect(unit.queryByLabelText('Threshold')).toBeNull();
    pick('scribble');
    expect(unit.getByLabelText('Threshold')).toMatchObject({ value: '128' });
    expect(unit.queryByLabelText('Low threshold')).toBeNull();
    pick('depth');
    expect(unit.queryByLabelText(/threshold/i)).toBeNull();

    fireEvent.change(unit.getByLabelText('Start'), { target: { value: '0.6' } });
    fireEvent.change(unit.getByLabelText('End'), { target: { value: '0.4' } });
    const end = unit.getByLabelText('End');
    expect(end.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(end.getAttribute('aria-describedby')!)?.textContent).toBe(ORDER_ERROR);
  });

  it('previews the map the worker computes, and forgets it when the preprocessor changes', async () => {
    const client = fakeClient(async () => new Blob([new Uint8Array([137, 80, 78, 71])], { type: 'image/png' }));
    render(
      <SdProvider client={client}>
        <WithUnits units={[{ ...newUnit(CN_INFO), preprocessor: 'canny', image: DOT }]} />
      </SdProvider>,
    );
    const unit = within(unitGroup(1));
    fireEvent.change(unit.getByLabelText('Low threshold'), { target: { value: '40' } });
    await act(async () => fireEvent.click(unit.getByRole('button', { name: 'Preview map' })));
    expect(client.preprocess).toHaveBeenCalledWith(
      { image: DOT.url, preprocessor: 'canny', low_threshold: 40, high_threshold: 200 },
      expect.objectContaining({ signal: expect.any(AbortSignal) }),
    );
    expect(unit.getByAltText('Control map of unit 1').getAttribute('src')).toBe('blob:control-map');

    fireEvent.change(unit.getByLabelText('Preprocessor'), { target: { value: 'invert' } });
    expect(unit.queryByAltText('Control map of unit 1')).toBeNull();
    expect(unit.getByText(/preview the map again/)).toBeTruthy();
  });

  it('shows a refused threshold next to its input, and asks for an image before previewing', async () => {
    const client = fakeClient(async () => {
      throw new SdError({ status: 422, code: 'invalid_value', field: 'high_threshold', message: '`high_threshold` must be at most 255' });
    });
    render(
      <SdProvider client={client}>
        <WithUnits units={[{ ...newUnit(CN_INFO), preprocessor: 'canny', image: DOT }, newUnit(CN_INFO)]} />
      </SdProvider>,
    );
    const first = within(unitGroup(1));
    await act(async () => fireEvent.click(first.getByRole('button', { name: 'Preview map' })));
    const high = first.getByLabelText('High threshold');
    expect(high.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(high.getAttribute('aria-describedby')!)?.textContent).toBe('high_threshold must be at most 255');

    const second = within(unitGroup(2));
    await act(async () => fireEvent.click(second.getByRole('button', { name: 'Preview map' })));
    expect(client.preprocess).toHaveBeenCalledTimes(1);
    expect(second.getByText('Choose a control image first.')).toBeTruthy();
  });

  it('shows the errors of the last Generate at the unit’s controls', () => {
    render(
      <SdProvider client={fakeClient(async () => new Blob())}>
        <WithUnits units={[newUnit(CN_INFO)]} errors={{ 'controlnets[0].model': '`controlnets[0].model`: unknown ControlNet' }} />
      </SdProvider>,
    );
    const model = within(unitGroup(1)).getByLabelText('ControlNet model');
    expect(model.id).toBe('field-controlnets[0].model');
    expect(document.getElementById(model.getAttribute('aria-describedby')!)?.textContent).toMatch(/unknown ControlNet/);
  });
});
