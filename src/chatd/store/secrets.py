"""Encryption at rest for secrets (provider keys, MCP credentials, user tokens)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from chatd import logs


class SecretBox:
    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key.encode() if isinstance(key, str) else key
        logs.register_secret(self._key)

    def derive(self, label: str) -> bytes:
        """A key for another purpose (e.g. replica-to-replica auth), bound to this secret key."""
        import hashlib
        import hmac

        return hmac.new(self._key, label.encode(), hashlib.sha256).digest()

    def fingerprint(self) -> str:
        """Identifies the key without revealing it: HMAC-SHA256 of a constant under the key."""
        return self.derive("chatd secret-key fingerprint v1").hex()

    @classmethod
    def from_settings(cls, key: str, data_dir: Path) -> SecretBox:
        """Use the configured key, else `data_dir/secret-key`, created (mode 0600) on first use."""
        if key:
            return cls(key)
        path = data_dir / "secret-key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def ticket_sealer(self, label: str) -> Fernet:
        """A Fernet under a key derived for `label`: tickets sealed with it (timestamped) can
        never be confused with secrets sealed at rest, nor with another purpose's tickets."""
        return Fernet(base64.urlsafe_b64encode(self.derive(label)))

    def seal(self, plaintext: str | None) -> str | None:
        if plaintext is None:
            return None
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, ciphertext: str | None) -> str | None:
        if ciphertext is None:
            return None
        try:
            plaintext = self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("a stored secret cannot be decrypted with this secret key") from exc
        # Whatever was sealed is a secret: it never appears in a log line (provider keys, MCP
        # credentials, users' OAuth tokens), whichever library would log it.
        logs.register_secret(plaintext)
        return plaintext
