// The inpainting mask, painted over the input image: brush and eraser with a
// size, undo/redo, clear, invert and zoom. White in the exported mask is
// repainted, black is kept (what the worker expects).

import { useCallback, useEffect, useImperativeHandle, useRef, useState, type Ref, type ReactNode } from 'react';
import type { LoadedImage } from '../lib/images.js';
import { UndoStack } from '../lib/undo-stack.js';
import { errorId, FieldError, fieldId } from './Field.js';

export interface MaskEditorHandle {
  /** The mask as a PNG data URL (white repaints), or null when nothing is painted. */
  toDataUrl(): string | null;
}

const PAINT = 'rgb(255, 40, 90)';
/** The viewport's height (styles.css `.mask-viewport`): at 100% the image fits in it. */
const VIEWPORT_HEIGHT = '70vh';

/**
 * At 100% the image fills the viewport's width or height, whichever it meets
 * first (a 64×64 image is drawn large, not 64 px in a corner), centred; zoom
 * scales that. The mask keeps the image's own pixels (`point` maps back).
 */
function stageStyle(image: { width: number; height: number }, zoom: number) {
  const fit = `min(100%, calc((${VIEWPORT_HEIGHT} - 2px) * ${image.width / image.height}))`;
  return { width: `calc(${zoom} * ${fit})`, aspectRatio: `${image.width} / ${image.height}` };
}
const ZOOMS = [0.5, 0.75, 1, 1.5, 2, 3, 4];

export function MaskEditor(props: {
  image: LoadedImage;
  ref?: Ref<MaskEditorHandle>;
  error: string | undefined;
  onChange?: () => void;
}): ReactNode {
  const { image, error, onChange, ref } = props;
  const canvas = useRef<HTMLCanvasElement>(null);
  const history = useRef(new UndoStack<ImageData>(40));
  const last = useRef<{ x: number; y: number } | null>(null);
  const [tool, setTool] = useState<'brush' | 'eraser'>('brush');
  const [size, setSize] = useState(() => Math.max(2, Math.round(Math.min(image.width, image.height) / 8)));
  const [zoom, setZoom] = useState(1);
  const [can, setCan] = useState({ undo: false, redo: false });
  const changed = useCallback(() => {
    setCan({ undo: history.current.canUndo, redo: history.current.canRedo });
    onChange?.();
  }, [onChange]);
  const maxSize = Math.max(8, Math.round(Math.max(image.width, image.height) / 2));

  const ctx = () => canvas.current?.getContext('2d', { willReadFrequently: true }) ?? null;
  const snapshot = () => {
    const c = ctx();
    return c ? c.getImageData(0, 0, image.width, image.height) : null;
  };
  const record = () => {
    const s = snapshot();
    if (s) history.current.push(s);
  };

  useImperativeHandle(
    ref,
    () => ({
      toDataUrl() {
        const c = ctx();
        if (!c) return null;
        const src = c.getImageData(0, 0, image.width, image.height);
        const out = new ImageData(image.width, image.height);
        let any = false;
        for (let i = 0; i < src.data.length; i += 4) {
          const v = src.data[i + 3]! >= 128 ? 255 : 0;
          if (v) any = true;
          out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
          out.data[i + 3] = 255;
        }
        if (!any) return null;
        const exp = document.createElement('canvas');
        exp.width = image.width;
        exp.height = image.height;
        exp.getContext('2d')!.putImageData(out, 0, 0);
        return exp.toDataURL('image/png');
      },
    }),
    [image],
  );

  // A new image starts a new mask.
  useEffect(() => {
    history.current.clear();
    ctx()?.clearRect(0, 0, image.width, image.height);
  }, [image]);

  const point = (e: React.PointerEvent<HTMLCanvasElement>) => {
    const rect = e.currentTarget.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) / rect.width) * image.width,
      y: ((e.clientY - rect.top) / rect.height) * image.height,
    };
  };

  const stroke = (from: { x: number; y: number }, to: { x: number; y: number }) => {
    const c = ctx();
    if (!c) return;
    c.globalCompositeOperation = tool === 'eraser' ? 'destination-out' : 'source-over';
    c.strokeStyle = PAINT;
    c.fillStyle = PAINT;
    c.lineWidth = size;
    c.lineCap = 'round';
    c.lineJoin = 'round';
    c.beginPath();
    if (from.x === to.x && from.y === to.y) {
      c.arc(to.x, to.y, size / 2, 0, Math.PI * 2);
      c.fill();
    } else {
      c.moveTo(from.x, from.y);
      c.lineTo(to.x, to.y);
      c.stroke();
    }
  };

  const undo = () => {
    const now = snapshot();
    const prev = now && history.current.undo(now);
    if (prev) {
      ctx()?.putImageData(prev, 0, 0);
      changed();
    }
  };
  const redo = () => {
    const now = snapshot();
    const next = now && history.current.redo(now);
    if (next) {
      ctx()?.putImageData(next, 0, 0);
      changed();
    }
  };
  const clear = () => {
    record();
    ctx()?.clearRect(0, 0, image.width, image.height);
    changed();
  };
  const invert = () => {
    const c = ctx();
    const data = snapshot();
    if (!c || !data) return;
    history.current.push(data);
    const out = new ImageData(image.width, image.height);
    for (let i = 0; i < data.data.length; i += 4) {
      out.data[i] = 255;
      out.data[i + 1] = 40;
      out.data[i + 2] = 90;
      out.data[i + 3] = data.data[i + 3]! >= 128 ? 0 : 255;
    }
    c.putImageData(out, 0, 0);
    changed();
  };
  const zoomBy = (dir: 1 | -1) => {
    const i = ZOOMS.indexOf(zoom);
    setZoom(ZOOMS[Math.min(ZOOMS.length - 1, Math.max(0, i + dir))]!);
  };

  return (
    <div className={error ? 'field invalid mask-editor' : 'field mask-editor'}>
      <div className="toolbar" role="toolbar" aria-label="Mask tools">
        <div className="segmented" role="radiogroup" aria-label="Tool">
          <label className="radio">
            <input type="radio" name="mask-tool" checked={tool === 'brush'} onChange={() => setTool('brush')} />
            Brush
          </label>
          <label className="radio">
            <input type="radio" name="mask-tool" checked={tool === 'eraser'} onChange={() => setTool('eraser')} />
            Eraser
          </label>
        </div>
        <label className="inline">
          Size
          <input
            type="range"
            min={1}
            max={maxSize}
            value={size}
            onChange={(e) => setSize(Number(e.target.value))}
            aria-valuetext={`${size} pixels`}
          />
          <output>{size}</output>
        </label>
        <button type="button" onClick={undo} disabled={!can.undo}>
          Undo
        </button>
        <button type="button" onClick={redo} disabled={!can.redo}>
          Redo
        </button>
        <button type="button" onClick={clear}>
          Clear
        </button>
        <button type="button" onClick={invert}>
          Invert
        </button>
        <span className="zoom">
          <button type="button" onClick={() => zoomBy(-1)} aria-label="Zoom out" disabled={zoom === ZOOMS[0]}>
            −
          </button>
          <output aria-label="Zoom">{Math.round(zoom * 100)}%</output>
          <button
            type="button"
            onClick={() => zoomBy(1)}
            aria-label="Zoom in"
            disabled={zoom === ZOOMS[ZOOMS.length - 1]}
          >
            +
          </button>
        </span>
      </div>
      <div
        className="mask-viewport"
        id={fieldId('mask')}
        aria-describedby={error ? errorId('mask') : undefined}
        aria-invalid={error ? true : undefined}
        tabIndex={0}
        aria-label="Mask: paint the part of the image to repaint. Ctrl+Z undoes, Ctrl+Shift+Z redoes, [ and ] change the brush size."
        onKeyDown={(e) => {
          const mod = e.ctrlKey || e.metaKey;
          if (mod && e.key.toLowerCase() === 'z') {
            e.preventDefault();
            if (e.shiftKey) redo();
            else undo();
          } else if (mod && e.key.toLowerCase() === 'y') {
            e.preventDefault();
            redo();
          } else if (e.key === '[') setSize((s) => Math.max(1, s - 1));
          else if (e.key === ']') setSize((s) => Math.min(maxSize, s + 1));
        }}
      >
        <div className="mask-stage" style={stageStyle(image, zoom)}>
          <img src={image.url} alt="The image to inpaint" draggable={false} />
          <canvas
            ref={canvas}
            width={image.width}
            height={image.height}
            data-testid="mask-canvas"
            className={tool}
            onPointerDown={(e) => {
              if (e.button !== 0) return;
              e.currentTarget.setPointerCapture(e.pointerId);
              record();
              const p = point(e);
              last.current = p;
              stroke(p, p);
            }}
            onPointerMove={(e) => {
              if (!last.current) return;
              const p = point(e);
              stroke(last.current, p);
              last.current = p;
            }}
            onPointerUp={() => {
              if (last.current) changed();
              last.current = null;
            }}
            onPointerCancel={() => {
              last.current = null;
            }}
          />
        </div>
      </div>
      <FieldError name="mask" error={error} />
    </div>
  );
}
