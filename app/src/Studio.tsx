// The studio: prompt and parameters, the job's progress and result, the input
// image and its mask, the gallery (with upscaling) and the prompt history.

import { useImageToImage, useInpainting, useTextToImage, type JobState } from '@sd-worker/react';
import type { Client, WorkerInfo } from '@sd-worker/sdk';
import { useCallback, useEffect, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { ControlNetSection } from './components/ControlNetSection.js';
import { DropOverlay } from './components/DropOverlay.js';
import { ExamplePrompts, promptPlaceholder } from './components/ExamplePrompts.js';
import { A1111Name, errorId, fieldId, FieldError, controlProps } from './components/Field.js';
import { Gallery } from './components/Gallery.js';
import { ImageInput } from './components/ImageInput.js';
import { Lightbox } from './components/Lightbox.js';
import { LoraSection } from './components/LoraSection.js';
import { MaskEditor, type MaskEditorHandle } from './components/MaskEditor.js';
import { ParamsDrawer } from './components/ParamsDrawer.js';
import { ParamsPanel } from './components/ParamsPanel.js';
import { PromptHistory } from './components/PromptHistory.js';
import { lastResult, ResultView } from './components/ResultView.js';
import { UndoToast } from './components/UndoToast.js';
import { UpscaleAction } from './components/UpscaleAction.js';
import { buildControlNets, normalizeUnitField, withoutUnitErrors } from './controlnet.js';
import {
  buildRequest,
  formFromParsed,
  OPERATIONS,
  restoreForm,
  type FieldErrors,
  type FormState,
  type Mode,
} from './form.js';
import { hiresFromParsed } from './hires.js';
import { forgetJobParams, jobParams, setJobParams, setPending } from './job-params.js';
import { imageToImageRequest, inpaintingRequest, textToImageRequest } from './job-request.js';
import { parseA1111 } from './lib/a1111.js';
import { errorText } from './lib/errors.js';
import { addImage, getValue, listImages, setValue, type GalleryEntry } from './lib/gallery-db.js';
import { blobBytes, dataUrlToBlob, loadImage, type LoadedImage } from './lib/images.js';
import { readPngParameters } from './lib/png-text.js';
import { clearPrompts, loadPrompts, rememberPrompt } from './lib/prompt-history.js';
import {
  appendWords,
  buildLoras,
  normalizeLoraField,
  restoreLoras,
  restoreNote,
  withoutLoraErrors,
} from './loras.js';
import { useControlUnits } from './use-control-units.js';
import { useFileDrop } from './use-file-drop.js';
import { useGalleryActions } from './use-gallery-actions.js';
import { useLoras } from './use-loras.js';
import { useServerFieldError } from './use-server-field-error.js';
import { useUpscaling } from './use-upscale.js';

const MODES: [Mode, string][] = [
  ['txt2img', 'Text to image'],
  ['img2img', 'Image to image'],
  ['inpaint', 'Inpainting'],
];

/** Fields that live in the parameters drawer (opened to show their errors on a phone). */
const DRAWER_FIELDS = new Set(['steps', 'guidance_scale', 'width', 'height', 'scheduler', 'num_images', 'seed', 'mask_blur']);
const inDrawer = (field: string) => DRAWER_FIELDS.has(field) || /^(hires|preview_method|vae)\b/.test(field);
/** The worker's names for a field, to the form's. */
const FIELD_ALIASES: Record<string, string> = { input_image: 'image', init_image: 'image', mask_image: 'mask' };

const FORM_KEY = 'sd-studio:form';
const MODE_KEY = 'sd-studio:mode';
const SEED_KEY = 'sd-studio:last-seed';

function loadJson<T>(key: string): T | null {
  try {
    const raw = localStorage.getItem(key);
    return raw ? (JSON.parse(raw) as T) : null;
  } catch {
    return null;
  }
}

function saveJson(key: string, value: unknown): void {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // not remembered
  }
}

function focusField(field: string): void {
  const el = document.getElementById(fieldId(field)) ?? document.getElementById(errorId(field));
  el?.focus();
  el?.scrollIntoView({ block: 'center', behavior: 'smooth' });
}

/** Saves a finished job's images into the gallery, once (a replay after a reload adds nothing). */
function useRecorder(mode: Mode, job: JobState, onAdded: (seed: number) => void): void {
  const { status, jobId, images } = job;
  useEffect(() => {
    if (status !== 'completed' || !jobId || images.length === 0) return;
    void (async () => {
      const params = jobParams(jobId, mode);
      let added = false;
      for (const [index, image] of images.entries()) {
        const ok = await addImage({
          id: `${jobId}:${index}`,
          jobId,
          index,
          operation: OPERATIONS[mode],
          createdAt: Date.now() + index / 1000,
          blob: dataUrlToBlob(image.url),
          format: image.format,
          seed: image.seed,
          width: image.width,
          height: image.height,
          params,
        }).catch(() => false);
        added ||= ok;
      }
      forgetJobParams(jobId);
      if (added) onAdded(images[0]!.seed);
    })();
  }, [status, jobId, images, mode, onAdded]);
}

export function Studio({
  info,
  workerUrl,
  client,
}: {
  info: WorkerInfo;
  workerUrl: string;
  /** The client of the lists (LoRAs, embeddings); the jobs use the provider's. */
  client: Client | Promise<Client>;
}): ReactNode {
  const txt2img = useTextToImage({ persistKey: 'studio:txt2img' });
  const img2img = useImageToImage({ persistKey: 'studio:img2img' });
  const inpaint = useInpainting({ persistKey: 'studio:inpaint' });
  const jobs = { txt2img, img2img, inpaint };

  const [mode, setModeState] = useState<Mode>(() => {
    const saved = loadJson<Mode>(MODE_KEY);
    return saved && saved in OPERATIONS ? saved : 'txt2img';
  });
  const setMode = (m: Mode) => {
    setModeState(m);
    saveJson(MODE_KEY, m);
  };
  const [form, setFormState] = useState<FormState>(() => restoreForm(info, loadJson<Partial<FormState>>(FORM_KEY)));
  const setForm = useCallback((next: FormState | ((f: FormState) => FormState)) => {
    setFormState((prev) => {
      const value = typeof next === 'function' ? next(prev) : next;
      saveJson(FORM_KEY, value);
      return value;
    });
  }, []);
  const patch = useCallback((p: Partial<FormState>) => setForm((f) => ({ ...f, ...p })), [setForm]);

  const [input, setInputState] = useState<LoadedImage | null>(null);
  const setInput = (image: LoadedImage | null) => {
    setInputState(image);
    void setValue('input', image).catch(() => {});
  };
  useEffect(() => {
    void getValue<LoadedImage>('input')
      .then((saved) => {
        if (saved) setInputState((current) => current ?? saved);
      })
      .catch(() => {});
  }, []);

  const controls = useControlUnits(info);
  const loras = useLoras(client);

  const [gallery, setGallery] = useState<GalleryEntry[]>([]);
  const refreshGallery = useCallback(async () => {
    setGallery(await listImages().catch(() => []));
  }, []);
  useEffect(() => {
    let live = true;
    listImages()
      .then((entries) => {
        if (live) setGallery(entries);
      })
      .catch(() => {});
    return () => {
      live = false;
    };
  }, []);

  const [lastSeed, setLastSeed] = useState<number | null>(() => loadJson<number>(SEED_KEY));
  const onAdded = useCallback(
    (seed: number) => {
      setLastSeed(seed);
      saveJson(SEED_KEY, seed);
      void refreshGallery();
    },
    [refreshGallery],
  );
  useRecorder('txt2img', txt2img, onAdded);
  useRecorder('img2img', img2img, onAdded);
  useRecorder('inpaint', inpaint, onAdded);

  const [clientErrors, setClientErrors] = useState<FieldErrors>({});
  const [drawer, setDrawer] = useState(false);
  const [lightbox, setLightbox] = useState<GalleryEntry | null>(null);
  const [notice, setNotice] = useState('');
  // An upscaled image joins the gallery and takes the lightbox's place.
  const onUpscaled = useCallback(
    (entry: GalleryEntry) => {
      void refreshGallery();
      setLightbox((open) => (open ? entry : open));
    },
    [refreshGallery, setLightbox],
  );
  const upscaling = useUpscaling(client, onUpscaled);
  const actions = useGalleryActions({
    info,
    gallery,
    lightbox,
    setLightbox,
    setForm,
    setMode,
    setInput,
    setNotice,
    loras,
    upscaling,
    refreshGallery,
  });
  const [prompts, setPrompts] = useState(loadPrompts);
  const [cancelling, setCancelling] = useState(false);
  const mask = useRef<MaskEditorHandle>(null);

  const job = jobs[mode];
  const rawField = job.error?.field;
  const serverField = rawField ? normalizeLoraField(normalizeUnitField(FIELD_ALIASES[rawField] ?? rawField)) : null;
  const errors: FieldErrors = { ...clientErrors };
  const serverMessage = useServerFieldError(job.error, serverField, { ...form, image: input, loras: loras.chosen, controlnets: controls.units });
  if (serverField && serverMessage) errors[serverField] = serverMessage;
  const generalError = job.status === 'failed' && job.error && !serverField ? errorText(job.error, workerUrl) : null;

  // A field the worker refused: show it (open the drawer on a phone) and focus it.
  const refused = serverField && job.error ? job.error : null;
  useEffect(() => {
    if (!refused || !serverField) return;
    const frame = requestAnimationFrame(() => {
      if (inDrawer(serverField)) setDrawer(true);
      requestAnimationFrame(() => focusField(serverField));
    });
    return () => cancelAnimationFrame(frame);
  }, [refused, serverField]);

  const showErrors = (found: FieldErrors) => {
    setClientErrors(found);
    const first = Object.keys(found)[0];
    if (first) {
      if (inDrawer(first)) setDrawer(true);
      requestAnimationFrame(() => focusField(first));
    }
  };

  const onInputFile = async (file: File) => {
    try {
      setInput(await loadImage(file, file.name));
      setClientErrors(({ image: _, ...rest }) => rest);
    } catch (e) {
      showErrors({ image: e instanceof Error ? e.message : String(e) });
    }
  };

  const fillFromFile = async (file: File): Promise<boolean> => {
    const text = file.type === 'image/png' ? await readPngParameters(await blobBytes(file)) : null;
    const parsed = text ? parseA1111(text, info.schedulers) : null;
    if (!parsed) return false;
    // The PNG's LoRAs (its prompts' tags, its `Lora hashes`) become chosen LoRAs when this worker has them.
    const restored = restoreLoras(parsed.prompt, parsed.negative_prompt, loras.available, parsed.extra['Lora hashes']);
    const withLoras = { ...parsed, prompt: restored.prompt, negative_prompt: restored.negative_prompt };
    setForm((f) => formFromParsed(f, withLoras, info.schedulers, upscaling.upscalers));
    loras.replace(restored.chosen);
    setClientErrors(withoutLoraErrors);
    const note = restoreNote(restored);
    const { unknownUpscaler } = hiresFromParsed(form.hires, parsed.extra, upscaling.upscalers);
    const hiresNote = unknownUpscaler ? ` Hires upscaler “${unknownUpscaler}” is not on this worker: Latent instead.` : '';
    setNotice(`Parameters read from ${file.name}.${note ? ` ${note}` : ''}${hiresNote}`);
    return true;
  };

  // Dropping a PNG anywhere on the page fills the form from its `parameters`;
  // in the image modes, the dropped image (a PNG with parameters too) becomes
  // the input image, as in A1111.
  const dragging = useFileDrop((file) => {
    void (async () => {
      const filled = await fillFromFile(file);
      if (mode !== 'txt2img') await onInputFile(file);
      else if (!filled) setNotice(`${file.name} has no generation parameters.`);
    })();
  });

  const generate = async (e?: FormEvent) => {
    e?.preventDefault();
    const { params, errors: found } = buildRequest(form, mode, lastSeed, info.limits.min_size);
    // ControlNet units go with every operation (the gallery keeps the request without them).
    const control = buildControlNets(controls.units);
    Object.assign(found, control.errors);
    // So do the chosen LoRAs (kept in the gallery's request: Reuse restores them).
    const lora = buildLoras(loras.chosen);
    Object.assign(found, lora.errors);
    if (mode !== 'txt2img' && !input) found.image = 'Choose an input image first.';
    let maskUrl: string | null = null;
    if (mode === 'inpaint' && input) {
      maskUrl = mask.current?.toDataUrl() ?? null;
      if (!maskUrl) found.mask = 'Paint over the part of the image to repaint.';
    }
    if (Object.keys(found).length > 0) {
      showErrors(found);
      return;
    }
    setClientErrors({});
    setNotice('');
    setPrompts((list) => rememberPrompt(list, form.prompt, form.negative_prompt));
    if (lora.loras) params.loras = lora.loras;
    setPending(mode, params);
    const units = control.controlnets;
    let id: string | null;
    if (mode === 'txt2img') id = await txt2img.generate(textToImageRequest(params, units));
    else if (mode === 'img2img') id = await img2img.generate(imageToImageRequest(params, units, input!.url));
    else id = await inpaint.generate(inpaintingRequest(params, units, input!.url, maskUrl!));
    if (id) setJobParams(id, params);
  };

  const cancel = async () => {
    setCancelling(true);
    await job.cancel();
    setCancelling(false);
  };

  const openResult = (index: number) => {
    const entry = gallery.find((g) => g.id === `${job.jobId}:${index}`);
    if (entry) setLightbox(entry);
  };

  return (
    <div className="app">
      <header className="topbar">
        <h1>sd-worker studio</h1>
        <nav aria-label="Mode" className="modes">
          {MODES.map(([m, label]) => (
            <button
              key={m}
              type="button"
              aria-pressed={mode === m}
              onClick={() => {
                setMode(m);
                setClientErrors({});
              }}
              data-mode={m}
            >
              {label}
              {jobs[m].isLoading && m !== mode && <span className="dot" aria-label="(generating)" />}
            </button>
          ))}
        </nav>
        <span className="model" title={info.model.source}>
          {info.model.id}
        </span>
      </header>

      <main className="layout">
        <div className="work">
          <form id="generate-form" className="card prompt-card" noValidate onSubmit={(e) => void generate(e)}>
            <div className={errors.prompt ? 'field invalid' : 'field'}>
              <label htmlFor={fieldId('prompt')}>Prompt</label>
              <textarea
                {...controlProps('prompt', errors.prompt)}
                rows={3}
                value={form.prompt}
                placeholder={promptPlaceholder(info.model.example_prompts)}
                onChange={(e) => patch({ prompt: e.target.value })}
                onKeyDown={(e) => {
                  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void generate(e);
                }}
              />
              <FieldError name="prompt" error={errors.prompt} />
              <ExamplePrompts examples={info.model.example_prompts} onPick={(prompt) => patch({ prompt })} />
            </div>
            <div className={errors.negative_prompt ? 'field invalid' : 'field'}>
              <label htmlFor={fieldId('negative_prompt')}>Negative prompt</label>
              <textarea
                {...controlProps('negative_prompt', errors.negative_prompt)}
                rows={1}
                value={form.negative_prompt}
                placeholder="blurry, low quality"
                onChange={(e) => patch({ negative_prompt: e.target.value })}
              />
              <FieldError name="negative_prompt" error={errors.negative_prompt} />
            </div>

            {mode !== 'txt2img' && (
              <>
                <ImageInput
                  image={input}
                  onFile={(f) => void onInputFile(f)}
                  onClear={() => setInput(null)}
                  error={errors.image}
                  showPreview={mode === 'img2img'}
                />
                {mode === 'inpaint' && input && (
                  <MaskEditor
                    key={input.url}
                    ref={mask}
                    image={input}
                    error={errors.mask}
                    onChange={() => setClientErrors(({ mask: _, ...rest }) => rest)}
                  />
                )}
                {mode === 'inpaint' && !input && <FieldError name="mask" error={errors.mask} />}
                <div className={errors.strength ? 'field invalid' : 'field'}>
                  <div className="label-row">
                    <label htmlFor={fieldId('strength')}>
                      Strength <output>{form.strength}</output>
                    </label>
                    <A1111Name name="Denoising strength" />
                  </div>
                  <input
                    {...controlProps('strength', errors.strength)}
                    type="range"
                    min={0}
                    max={1}
                    step={0.05}
                    value={form.strength}
                    onChange={(e) => patch({ strength: e.target.value })}
                  />
                  <p className="hint">0 keeps the input; 1 repaints it entirely</p>
                  <FieldError name="strength" error={errors.strength} />
                </div>
              </>
            )}

            <LoraSection
              info={info}
              loras={loras}
              errors={errors}
              onEdited={() => setClientErrors(withoutLoraErrors)}
              onAppend={(words, negative) =>
                setForm((f) =>
                  negative
                    ? { ...f, negative_prompt: appendWords(f.negative_prompt, words) }
                    : { ...f, prompt: appendWords(f.prompt, words) },
                )
              }
            />

            <ControlNetSection
              info={info}
              controls={controls}
              errors={errors}
              workerUrl={workerUrl}
              onEdited={(index) => setClientErrors((e) => withoutUnitErrors(e, index))}
            />

            <div className="actions">
              <button type="submit" className="primary" disabled={job.isLoading} data-testid="generate">
                {job.isLoading ? 'Generating…' : 'Generate'}
              </button>
              <button
                type="button"
                className="drawer-toggle"
                aria-controls="params"
                aria-expanded={drawer}
                onClick={() => setDrawer(true)}
              >
                Parameters
              </button>
              <label className="file-button">
                <input
                  type="file"
                  accept="image/png"
                  className="visually-hidden"
                  data-testid="read-parameters"
                  onChange={(e) => {
                    const file = e.target.files?.[0];
                    e.target.value = '';
                    if (file)
                      void fillFromFile(file).then((ok) => {
                        if (!ok) setNotice(`${file.name} has no generation parameters.`);
                      });
                  }}
                />
                Read parameters from a PNG…
              </label>
            </div>
            <PromptHistory
              prompts={prompts}
              onPick={(p) => patch({ prompt: p.prompt, negative_prompt: p.negative_prompt })}
              onClear={() => setPrompts(clearPrompts())}
            />
            <p className="notice-line" role="status" aria-live="polite" data-testid="notice">
              {notice}
            </p>
          </form>

          <ResultView
            job={job}
            generalError={generalError}
            cancelling={cancelling}
            onCancel={() => void cancel()}
            last={lastResult(gallery)}
            onOpenImage={openResult}
            onOpenEntry={setLightbox}
          />
        </div>

        <ParamsDrawer open={drawer} onClose={() => setDrawer(false)}>
          <ParamsPanel
            info={info}
            mode={mode}
            form={form}
            set={patch}
            errors={errors}
            lastSeed={lastSeed}
            upscalers={upscaling.upscalers}
          />
        </ParamsDrawer>
      </main>

      <Gallery entries={gallery} onOpen={setLightbox} />
      <Lightbox
        entry={lightbox}
        onClose={() => setLightbox(null)}
        onAction={(a, e) => void actions.onAction(a, e)}
        onStep={actions.step}
        canStep={actions.canStep}
      >
        {lightbox && (
          <UpscaleAction
            entry={lightbox}
            upscaling={upscaling}
            maxPixels={info.limits.max_input_pixels}
            workerUrl={workerUrl}
          />
        )}
      </Lightbox>
      <UndoToast message={actions.deleted ? 'Deleted' : null} onUndo={() => void actions.undoDelete()} />
      <DropOverlay active={dragging} mode={mode} />
    </div>
  );
}
