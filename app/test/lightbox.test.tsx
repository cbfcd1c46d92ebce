import { cleanup, render, screen } from '@testing-library/react';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lightbox } from '../src/components/Lightbox.js';
import type { GalleryEntry } from '../src/lib/gallery-db.js';

afterEach(cleanup);

beforeAll(() => {
  // jsdom has no modal dialogs or object URLs.
  HTMLDialogElement.prototype.showModal ??= function (this: HTMLDialogElement) {
    this.open = true;
  };
  HTMLDialogElement.prototype.close ??= function (this: HTMLDialogElement) {
    this.open = false;
  };
  URL.createObjectURL ??= () => 'blob:test';
});

describe('Lightbox', () => {
  it('names the scheduler by its label, not its wire name', () => {
    const entry = {
      id: 'a',
      createdAt: 0,
      blob: new Blob([]),
      format: 'png',
      seed: 7,
      width: 64,
      height: 64,
      params: { operation: 'image_generation', prompt: 'a cat', scheduler: 'dpmpp_2m_karras' },
    } as unknown as GalleryEntry;
    render(<Lightbox entry={entry} onClose={() => {}} onAction={() => {}} />);
    expect(screen.getByText('DPM++ 2M Karras')).toBeTruthy();
    expect(screen.queryByText('dpmpp_2m_karras')).toBeNull();
  });
});
