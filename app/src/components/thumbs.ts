// Object URLs of gallery blobs, made once per blob and revoked on delete.

const urls = new WeakMap<Blob, string>();

export function blobUrl(blob: Blob): string {
  let url = urls.get(blob);
  if (!url) {
    url = URL.createObjectURL(blob);
    urls.set(blob, url);
  }
  return url;
}

export function revokeBlobUrl(blob: Blob): void {
  const url = urls.get(blob);
  if (url) {
    URL.revokeObjectURL(url);
    urls.delete(blob);
  }
}
