import { cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { ExamplePrompts, promptPlaceholder } from '../src/components/ExamplePrompts.js';
import { lastResult } from '../src/components/ResultView.js';
import type { GalleryEntry } from '../src/lib/gallery-db.js';

afterEach(cleanup);

const entry = (jobId: string, index: number, createdAt: number): GalleryEntry => ({
  id: `${jobId}:${index}`,
  jobId,
  index,
  operation: 'image_generation',
  createdAt,
  blob: new Blob(),
  format: 'png',
  seed: index,
  width: 64,
  height: 64,
  params: null,
});

describe('lastResult', () => {
  it('is the newest entry’s batch, in order', () => {
    const gallery = [entry('b', 1, 5), entry('b', 0, 4), entry('a', 0, 1)];
    expect(lastResult(gallery).map((e) => e.id)).toEqual(['b:0', 'b:1']);
    expect(lastResult([])).toEqual([]);
  });
});

describe('ExamplePrompts', () => {
  it('uses the model’s first example as the placeholder, a generic one without', () => {
    expect(promptPlaceholder(['a red circle on a blue background', 'x'])).toBe('a red circle on a blue background');
    expect(promptPlaceholder(undefined)).toBe('Describe the image to make');
    expect(promptPlaceholder([])).toBe('Describe the image to make');
  });

  it('puts a suggestion in the prompt with one click', () => {
    const picked: string[] = [];
    render(<ExamplePrompts examples={['a red circle', 'a green star']} onPick={(p) => picked.push(p)} />);
    fireEvent.click(screen.getByRole('button', { name: 'a green star' }));
    expect(picked).toEqual(['a green star']);
  });

  it('shows nothing when the model declares none', () => {
    const { container } = render(<ExamplePrompts examples={[]} onPick={() => {}} />);
    expect(container.textContent).toBe('');
  });
});
