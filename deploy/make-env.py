"""Print a deploy/.env with fresh secrets for deploy/compose.yaml (run once; keep the result).

    docker run --rm -i --entrypoint python chatd - < deploy/make-env.py > deploy/.env

Needs only the `cryptography` package (in the chatd image). CHATD_SECRET_KEY seals the secrets
stored in the database: back it up with the database, apart from the database backups.
"""

import base64
import secrets

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric import ec

vapid = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
print(f"POSTGRES_PASSWORD={secrets.token_urlsafe(24)}")
print(f"CHATD_SECRET_KEY={Fernet.generate_key().decode()}")
print(f"CHATD_VAPID_PRIVATE_KEY={base64.urlsafe_b64encode(vapid).rstrip(b'=').decode()}")
print("CHATD_PUBLIC_URL=http://localhost:8080")
print("# CHATD_LISTEN=0.0.0.0:8080")
print("# CHATD_OTEL_ENDPOINT=http://otel-collector:4318")
