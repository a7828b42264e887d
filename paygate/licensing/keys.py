"""Licence keys: the school's secret that names its licence (docs/architecture.md, invariant 10).

A key is 80 random bits written as 16 characters of Crockford's base 32 in groups of four after `PG-`
(`PG-7K3Q-M2XD-9TQF-H4WN`). What an admin types is read without regard to case, dashes, spaces or the
`PG` prefix, with the letters people confuse read as the digits they look like (O as 0, I and L as 1).
Only the SHA-256 of the 16 characters is stored: 80 random bits need no slow hash, and a lookup by hash
is one indexed read. The key a registration's licence was opened with is derived from its flow token
and `SECRET_KEY` (an HMAC), so that the frame and the popup can show it again without it being stored;
a key replaced on the licence page is random, shown once and stored only as its hash too.
"""

import hashlib
import hmac
import secrets

from itsdangerous import BadData, URLSafeTimedSerializer

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 16  # 16 characters of 5 bits: 80 bits
PREFIX = "PG"
# What people type for what they mean (Crockford): the letters that look like digits.
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_SEPARATORS = str.maketrans("", "", "- \t")
MAX_TYPED = 64  # anything longer is no key, and is not read further


def _written(bits: bytes) -> str:
    number = int.from_bytes(bits, "big")
    chars = [ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(LENGTH))]
    return "".join(chars)


def new() -> str:
    """A fresh random key, in its normal form (16 characters)."""
    return _written(secrets.token_bytes(10))


def derived(flow_token: str, secret: str) -> str:
    """The key a registration's licence was opened with, from its flow token: the frame can show it again."""
    digest = hmac.new(secret.encode(), b"licence-key\0" + flow_token.encode(), hashlib.sha256).digest()
    return _written(digest[:10])


def normal(typed: str | None) -> str | None:
    """The 16 characters an admin's input stands for, or None when it cannot be a key (never raises)."""
    if not isinstance(typed, str) or len(typed) > MAX_TYPED or not typed.isascii():
        return None
    text = typed.strip().upper().translate(_SEPARATORS)
    if len(text) == LENGTH + len(PREFIX) and text.startswith(PREFIX):
        text = text[len(PREFIX) :]
    text = text.translate(_READ_AS)
    if len(text) != LENGTH or any(c not in ALPHABET for c in text):
        return None
    return text


def shown(key: str) -> str:
    """The key as people read it: `PG-7K3Q-M2XD-9TQF-H4WN`."""
    return "-".join([PREFIX, *(key[i : i + 4] for i in range(0, LENGTH, 4))])


def digest(key: str) -> str:
    """What is stored of a key in normal form: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def hint(key: str) -> str:
    """The last 4 characters, what operators see."""
    return key[-4:]


def matches(key: str, stored_digest: str | None) -> bool:
    """Whether a key in normal form is the one stored, compared in constant time."""
    return stored_digest is not None and hmac.compare_digest(digest(key), stored_digest)


# A link to the licence page that works for one hour without the key: Stripe's return URLs (Checkout, the
# customer portal) and the licence API's `manage_url` carry it, so that the key never leaves this service.
# It names the licence and the hash of its key: replacing the key ends every such link at once.
LINK_SECONDS = 3600
_LINK_SALT = "licence-page-link"


def link_token(licence_id: int, key_digest: str, secret: str) -> str:
    """A token naming licence `licence_id` (with key digest `key_digest`), good for LINK_SECONDS."""
    return URLSafeTimedSerializer(secret, salt=_LINK_SALT).dumps([licence_id, key_digest[:16]])


def link_target(token: str, secret: str) -> tuple[int, str] | None:
    """(licence id, the start of its key digest) a token names, or None when it is forged, malformed or old."""
    if not isinstance(token, str) or len(token) > 200:
        return None
    try:
        value = URLSafeTimedSerializer(secret, salt=_LINK_SALT).loads(token, max_age=LINK_SECONDS)
    except BadData:
        return None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], str)):
        return None
    return value[0], value[1]
