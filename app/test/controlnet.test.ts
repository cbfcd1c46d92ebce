import { describe, expect, it } from 'vitest';
import {
  buildControlNets,
  MAX_UNITS,
  newUnit,
  normalizeUnitField,
  ORDER_ERROR,
  previewRequest,
  restoreUnits,
  unitField,
  withoutUnitErrors,
  type ControlUnit,
} from '../src/controlnet.js';
import { CN_INFO, DOT, INFO } from './fixtures.js';

const unit = (patch: Partial<ControlUnit> = {}): ControlUnit => ({ ...newUnit(CN_INFO), image: DOT, ...patch });

describe('ControlNet units', () => {
  it('start on the first ControlNet, no preprocessor, full strength over every step', () => {
    const u = newUnit(CN_INFO);
    expect(u).toMatchObject({
      model: 'tiny-canny',
      preprocessor: 'none',
      conditioning_scale: '1',
      guidance_start: '0',
      guidance_end: '1',
      image: null,
    });
    expect(newUnit(CN_INFO).key).not.toBe(u.key);
  });

  it('send nothing without units', () => {
    expect(buildControlNets([])).toEqual({ errors: {} });
  });

  it('become the request’s controlnets, numbers as numbers, only the thresholds of their preprocessor', () => {
    const { controlnets, errors } = buildControlNets([
      unit({ preprocessor: 'canny', low_threshold: '50', high_threshold: '150', threshold: '9', conditioning_scale: '0.8' }),
      unit({ model: 'tiny-scribble', preprocessor: 'scribble', threshold: '90', guidance_start: '0.25', guidance_end: '0.75' }),
      unit({ preprocessor: 'none', low_threshold: 'x' }),
    ]);
    expect(errors).toEqual({});
    expect(controlnets).toEqual([
      {
        model: 'tiny-canny',
        image: DOT.url,
        conditioning_scale: 0.8,
        guidance_start: 0,
        guidance_end: 1,
        preprocessor: 'canny',
        low_threshold: 50,
        high_threshold: 150,
      },
      {
        model: 'tiny-scribble',
        image: DOT.url,
        conditioning_scale: 1,
        guidance_start: 0.25,
        guidance_end: 0.75,
        preprocessor: 'scribble',
        threshold: 90,
      },
      // `none` is the worker's default: not sent, and no threshold is read.
      { model: 'tiny-canny', image: DOT.url, conditioning_scale: 1, guidance_start: 0, guidance_end: 1 },
    ]);
  });

  it('refuse a start that is not before the end, naming the unit’s field', () => {
    expect(buildControlNets([unit(), unit({ guidance_start: '0.5', guidance_end: '0.5' })]).errors).toEqual({
      'controlnets[1].guidance_end': ORDER_ERROR,
    });
    expect(buildControlNets([unit({ guidance_start: '0.9', guidance_end: '0.2' })]).errors).toEqual({
      'controlnets[0].guidance_end': ORDER_ERROR,
    });
    expect(buildControlNets([unit({ guidance_start: '0.45', guidance_end: '0.5' })]).errors).toEqual({});
  });

  it('refuse a unit without image or model, and numbers out of range', () => {
    const { errors } = buildControlNets([
      unit({ image: null, model: '' }),
      unit({ conditioning_scale: '2.5', guidance_end: '1.2' }),
      unit({ preprocessor: 'canny', low_threshold: '200', high_threshold: '100' }),
      unit({ preprocessor: 'scribble', threshold: '12.5' }),
    ]);
    expect(Object.keys(errors).sort()).toEqual([
      'controlnets[0].image',
      'controlnets[0].model',
      'controlnets[1].conditioning_scale',
      'controlnets[1].guidance_end',
      'controlnets[2].high_threshold',
      'controlnets[3].threshold',
    ]);
    expect(errors['controlnets[1].conditioning_scale']).toBe('Enter a number from 0 to 2.');
    expect(errors['controlnets[3].threshold']).toBe('Enter a whole number.');
    expect(buildControlNets(Array.from({ length: MAX_UNITS + 1 }, () => unit())).errors.controlnets).toMatch(/At most 4/);
  });

  it('preview with the image and the preprocessor’s thresholds only', () => {
    expect(previewRequest(unit({ preprocessor: 'canny', low_threshold: '10', high_threshold: '20' }), 0)).toEqual({
      request: { image: DOT.url, preprocessor: 'canny', low_threshold: 10, high_threshold: 20 },
      errors: {},
    });
    expect(previewRequest(unit({ preprocessor: 'invert' }), 0).request).toEqual({ image: DOT.url, preprocessor: 'invert' });
    expect(previewRequest(unit({ image: null }), 2)).toEqual({
      request: null,
      errors: { 'controlnets[2].image': 'Choose a control image first.' },
    });
    expect(previewRequest(unit({ preprocessor: 'canny', low_threshold: '300' }), 1).errors).toEqual({
      'controlnets[1].low_threshold': 'Enter a number from 0 to 255.',
    });
  });

  it('come back from storage fitted to the worker', () => {
    const saved = [{ ...unit(), model: 'gone', preprocessor: 'sobel' as never }, unit({ model: 'tiny-scribble' })];
    const restored = restoreUnits(CN_INFO, saved);
    expect(restored.map((u) => [u.model, u.preprocessor])).toEqual([
      ['tiny-canny', 'none'],
      ['tiny-scribble', 'none'],
    ]);
    expect(restored[1]!.image).toEqual(DOT);
    expect(restoreUnits(INFO, saved)).toEqual([]); // a worker without ControlNets
    expect(restoreUnits(CN_INFO, null)).toEqual([]);
    expect(restoreUnits(CN_INFO, Array.from({ length: 6 }, () => unit()))).toHaveLength(MAX_UNITS);
  });

  it('name their fields as the worker does, and drop a unit’s errors', () => {
    expect(unitField(3, 'image')).toBe('controlnets[3].image');
    expect(normalizeUnitField('controlnets.1.guidance_end')).toBe('controlnets[1].guidance_end');
    expect(normalizeUnitField('controlnets[1].model')).toBe('controlnets[1].model');
    expect(normalizeUnitField('steps')).toBe('steps');
    const errors = { steps: 's', 'controlnets[0].image': 'a', 'controlnets[1].model': 'b', controlnets: 'c' };
    expect(withoutUnitErrors(errors, 0)).toEqual({ steps: 's', 'controlnets[1].model': 'b', controlnets: 'c' });
    expect(withoutUnitErrors(errors, null)).toEqual({ steps: 's' });
  });
});
