"""Operator accounts: password hashing (Argon2id) and the password policy.

The policy: at least MIN_LENGTH characters, and not a common password, compared case-insensitively, also with
spaces and the digits and symbols people add at either end taken off ("Password1234!" is "password"); digits and
symbols alone are common too.
common_passwords.txt beside this module is the list of the 20,000 passwords seen most often in breaches that
Django ships (Royce Williams' list, lowercased), less its unprintable entries."""

import functools
import unicodedata
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
_COMMON_PASSWORDS = Path(__file__).with_name("common_passwords.txt")
# Added around a common password to pass a rule ("Summer2024!"), so they are taken off before the lookup.
_PADDING = "0123456789!@#$%^&*()-_=+.,;:?/~`'\"[]{}<>|\\ "

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def problem(password: str) -> str | None:
    """Why `password` may not be an operator's, in one sentence, or None if it may."""
    if len(password) < MIN_LENGTH:
        return f"The password must have at least {MIN_LENGTH} characters."
    if _common(password):
        return "That password is among the most common ones: choose another (a few unrelated words work well)."
    return None


def _common(password: str) -> bool:
    folded = unicodedata.normalize("NFKC", password).casefold()
    core = folded.strip(_PADDING)
    if not core:
        return True  # digits and symbols only: "123456789012" is a common password's pattern
    candidates = {folded, folded.replace(" ", ""), core, core.replace(" ", "")}
    return any(candidate in _common_passwords() for candidate in candidates)


@functools.cache
def _common_passwords() -> frozenset[str]:
    with _COMMON_PASSWORDS.open(encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())
