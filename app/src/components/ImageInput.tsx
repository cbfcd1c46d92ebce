// An image to drop or pick: the input image of image to image and inpainting,
// and each ControlNet unit's control image.

import { useRef, useState, type DragEvent, type ReactNode } from 'react';
import type { LoadedImage } from '../lib/images.js';
import { controlProps, FieldError, fieldId } from './Field.js';

export function ImageInput(props: {
  image: LoadedImage | null;
  onFile: (file: File) => void;
  onClear: () => void;
  error: string | undefined;
  /** The mask editor replaces the preview in inpainting. */
  showPreview: boolean;
  /** The field's name (its id and errors): `image` unless given. */
  name?: string;
  label?: string;
  /** The preview's alternative text. */
  alt?: string;
}): ReactNode {
  const { image, onFile, onClear, error, name = 'image', label = 'Input image', alt = 'The input image' } = props;
  const input = useRef<HTMLInputElement>(null);
  const [over, setOver] = useState(false);

  const drop = (e: DragEvent) => {
    e.preventDefault();
    e.stopPropagation(); // not the page's drop-to-fill-the-form
    setOver(false);
    const file = e.dataTransfer.files[0];
    if (file) onFile(file);
  };

  return (
    <div className={error ? 'field invalid' : 'field'}>
      <div
        className={`dropzone${over ? ' over' : ''}${image ? ' filled' : ''}`}
        data-testid="dropzone"
        onDragOver={(e) => {
          e.preventDefault();
          e.stopPropagation();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={drop}
      >
        <label htmlFor={fieldId(name)}>{label}</label>
        {image && props.showPreview && <img src={image.url} alt={alt} className="input-preview" />}
        {image ? (
          <p className="muted">
            {image.name} · {image.width}×{image.height}
          </p>
        ) : (
          <p className="muted">Drop a PNG, JPEG or WebP image here, or choose one.</p>
        )}
        <div className="row">
          <button type="button" onClick={() => input.current?.click()}>
            {image ? 'Replace image…' : 'Choose image…'}
          </button>
          {image && (
            <button type="button" onClick={onClear}>
              Remove
            </button>
          )}
        </div>
        <input
          {...controlProps(name, error)}
          ref={input}
          className="visually-hidden"
          type="file"
          accept="image/png,image/jpeg,image/webp"
          onChange={(e) => {
            const file = e.target.files?.[0];
            if (file) onFile(file);
            e.target.value = '';
          }}
        />
      </div>
      <FieldError name={name} error={error} />
    </div>
  );
}
