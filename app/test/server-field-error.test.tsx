import { renderHook } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { useServerFieldError } from '../src/use-server-field-error.js';

describe('useServerFieldError', () => {
  it('drops the worker’s message once the field it names changes', () => {
    const error = { message: '`width` must be a multiple of 4' };
    const { result, rerender } = renderHook(
      ({ width, prompt }: { width: string; prompt: string }) => useServerFieldError(error, 'width', { width, prompt }),
      { initialProps: { width: '66', prompt: 'a cat' } },
    );
    expect(result.current).toBe(error.message);
    rerender({ width: '66', prompt: 'a dog' });
    expect(result.current).toBe(error.message);
    rerender({ width: '68', prompt: 'a dog' });
    expect(result.current).toBeNull();
  });

  it('shows a new refusal of the same field again', () => {
    const first = { message: 'too big' };
    const { result, rerender } = renderHook(
      ({ error, width }: { error: { message: string }; width: string }) => useServerFieldError(error, 'width', { width }),
      { initialProps: { error: first, width: '4000' } },
    );
    rerender({ error: first, width: '3000' });
    expect(result.current).toBeNull();
    const second = { message: 'still too big' };
    rerender({ error: second, width: '3000' });
    expect(result.current).toBe('still too big');
  });

  it('follows nested fields by their first segment', () => {
    const error = { message: 'weight out of range' };
    const units = [{ weight: '9' }];
    const { result, rerender } = renderHook(({ u }: { u: unknown }) => useServerFieldError(error, 'controlnets[0].weight', { controlnets: u }), {
      initialProps: { u: units as unknown },
    });
    expect(result.current).toBe(error.message);
    rerender({ u: [{ weight: '1' }] });
    expect(result.current).toBeNull();
  });
});
