// The LoRAs section (jsdom): hidden without LoRAs or embeddings, another
// family's LoRA disabled with the reason, a chosen LoRA's weight and trigger
// words, the embeddings' buttons, and the result's match counts.

import type { EmbeddingInfo, LoraInfo, WorkerInfo } from '@sd-worker/sdk';
import { cleanup, fireEvent, render, screen, within } from '@testing-library/react';
import { useState, type ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LoraMatches, LoraSection } from '../src/components/LoraSection.js';
import type { ChosenLora } from '../src/loras.js';
import type { Loras } from '../src/use-loras.js';
import { INFO } from './fixtures.js';

afterEach(cleanup);

const SD15 = { ...INFO, model: { ...INFO.model, family: 'stable-diffusion-1' } } as WorkerInfo;

const lora = (name: string, family: string, trigger_words: string[] = []): LoraInfo => ({
  name,
  family,
  trigger_words,
  size_bytes: 1,
  format: 'kohya',
  hash: '0123456789ab',
  metadata: {},
});
const AVAILABLE = [lora('style', 'stable-diffusion-1', ['sks style']), lora('xl', 'stable-diffusion-xl')];
const EMBEDDINGS: EmbeddingInfo[] = [{ name: 'shapey', family: 'unknown', vectors: 2, size_bytes: 1, hash: 'ab' }];

function Harness(props: {
  available?: LoraInfo[];
  embeddings?: EmbeddingInfo[];
  chosen?: ChosenLora[];
  errors?: Record<string, string>;
  onAppend?: (words: string, negative: boolean) => void;
}): ReactNode {
  const [chosen, setChosen] = useState<ChosenLora[]>(props.chosen ?? []);
  const loras: Loras = {
    available: props.available ?? AVAILABLE,
    embeddings: props.embeddings ?? EMBEDDINGS,
    chosen,
    add: (name) => setChosen((c) => [...c, { name, weight: '1' }]),
    remove: (name) => setChosen((c) => c.filter((x) => x.name !== name)),
    update: (name, patch) => setChosen((c) => c.map((x) => (x.name === name ? { ...x, ...patch } : x))),
    replace: setChosen,
  };
  return (
    <LoraSection
      info={SD15}
      loras={loras}
      errors={props.errors ?? {}}
      onEdited={() => {}}
      onAppend={props.onAppend ?? (() => {})}
    />
  );
}

describe('LoraSection', () => {
  it('is not shown without LoRAs nor embeddings', () => {
    const { container } = render(<Harness available={[]} embeddings={[]} />);
    expect(container.innerHTML).toBe('');
  });

  it("disables another family's LoRA with the reason, and adds one of the model's", () => {
    render(<Harness />);
    const xl = screen.getByRole('button', { name: 'Add xl' });
    expect(xl).toHaveProperty('disabled', true);
    expect(screen.getByText(/Made for stable-diffusion-xl; the model is stable-diffusion-1/)).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Add style' }));
    const card = screen.getByRole('group', { name: 'style' });
    expect(within(card).getByRole('spinbutton')).toHaveProperty('value', '1');
    expect(screen.getByRole('button', { name: 'Add style' })).toHaveProperty('disabled', true);
  });

  it('filters the list by a search', () => {
    render(<Harness />);
    fireEvent.change(screen.getByLabelText('Find a LoRA'), { target: { value: 'sks' } });
    expect(screen.getAllByTestId('lora-option').map((li) => li.dataset.name)).toEqual(['style']);
  });

  it('types any weight, slides 0 to 2, and a split weight from a PNG shows until a new weight', () => {
    render(<Harness chosen={[{ name: 'style', weight: '0.8', unet_weight: '0.5', text_encoder_weight: '0.8' }]} />);
    const card = screen.getByRole('group', { name: 'style' });
    expect(within(card).getByTestId('split-weight').textContent).toContain('UNet 0.5, text encoders 0.8');
    fireEvent.change(within(card).getByRole('spinbutton'), { target: { value: '-3' } });
    expect(within(card).queryByTestId('split-weight')).toBeNull();
    expect(within(card).getByRole('slider')).toHaveProperty('value', '0');
    fireEvent.change(within(card).getByRole('slider'), { target: { value: '1.5' } });
    expect(within(card).getByRole('spinbutton')).toHaveProperty('value', '1.5');
  });

  it('shows the weight error, appends trigger words and embeddings', () => {
    const onAppend = vi.fn();
    render(
      <Harness chosen={[{ name: 'style', weight: '9' }]} errors={{ 'loras[0].weight': 'Enter a number from -4 to 4.' }} onAppend={onAppend} />,
    );
    expect(screen.getByText('Enter a number from -4 to 4.')).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Add trigger word sks style to the prompt' }));
    fireEvent.click(screen.getByRole('button', { name: 'Add shapey to the prompt' }));
    fireEvent.click(screen.getByRole('button', { name: 'Add shapey to the negative prompt' }));
    expect(onAppend.mock.calls).toEqual([
      ['sks style', false],
      ['shapey', false],
      ['shapey', true],
    ]);
  });

  it('shows the match counts of a job, a partial match as a warning', () => {
    render(
      <LoraMatches
        loras={[
          { name: 'style', hash: 'a', tensors: 10, matched_tensors: 10, unet_weight: 1, text_encoder_weight: 1 },
          { name: 'odd', hash: 'b', tensors: 10, matched_tensors: 4, unet_weight: 0.5, text_encoder_weight: 0 },
        ]}
      />,
    );
    const items = screen.getAllByRole('listitem');
    expect(items.map((li) => li.textContent)).toEqual([
      'style: 10 of 10 tensors matched (UNet 1, text encoders 1)',
      'odd: 4 of 10 tensors matched (UNet 0.5, text encoders 0)',
    ]);
    expect(items[1]!.className).toContain('warn');
  });
});
