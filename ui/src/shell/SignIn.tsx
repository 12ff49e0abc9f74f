import { useState } from "preact/hooks";

interface Props {
  error: string | null;
  busy: boolean;
  onSubmit: (token: string) => void;
}

/** Paste a token; `chatd serve` prints a sign-in link for the admin. */
export function SignIn({ error, busy, onSubmit }: Props) {
  const [token, setToken] = useState("");
  return (
    <main class="signin" id="main">
      <form
        class="card"
        aria-labelledby="signin-h"
        onSubmit={(e) => {
          e.preventDefault();
          if (token.trim()) onSubmit(token.trim());
        }}
      >
        <h1 id="signin-h">Sign in to chatd</h1>
        <p>
          Open the link <code>chatd serve</code> printed, or paste an API token. An admin's token is in{" "}
          <code>&lt;data dir&gt;/admin-token</code>; members get theirs from an admin.
        </p>
        <label for="token">API token</label>
        <input
          id="token"
          type="password"
          autocomplete="current-password"
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          aria-invalid={error ? "true" : undefined}
          aria-describedby={error ? "signin-error" : undefined}
          autoFocus
        />
        {error && <p id="signin-error" class="error" role="alert">{error}</p>}
        <button type="submit" class="primary" disabled={busy || !token.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
