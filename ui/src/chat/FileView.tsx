import { useEffect, useState } from "preact/hooks";
import { fileBlobUrl } from "../api/chats";

/** A stored file: images inline, anything else as a link (both fetched with the token); `label`
 * names the link (default: the file's name or type). */
export function FileView({ fileId, mediaType, name, label: shown }: { fileId: string; mediaType: string; name?: string | null; label?: string }) {
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let gone = false;
    let made: string | null = null;
    fileBlobUrl(fileId)
      .then((u) => { made = u; if (!gone) setUrl(u); })
      .catch(() => { if (!gone) setFailed(true); });
    return () => { gone = true; if (made) URL.revokeObjectURL(made); };
  }, [fileId]);
  const label = shown || name || mediaType;
  if (failed) return <span class="file muted">{label} (unavailable)</span>;
  if (mediaType.startsWith("image/")) {
    return url ? <img class="file-image" src={url} alt={name || "image"} /> : <span class="file muted">{label}…</span>;
  }
  return url ? <a class="file" href={url} download={name || undefined}>{label}</a> : <span class="file muted">{label}…</span>;
}
