"""SHA-512 crypt (``$6$``), the password hash Linux ``/etc/shadow`` and Kairos ``users.<name>.passwd`` take.

Pure Python after Ulrich Drepper's specification ("Unix crypt using SHA-256 and SHA-512", the algorithm glibc,
musl, busybox and ``openssl passwd -6`` implement). The standard library's ``crypt`` module is deprecated (PEP 594,
removed in 3.13) and passlib is unmaintained, hence this ~60-line port.

>>> sha512_crypt("hunter2", "saltsaltsaltsalt")[:20]
'$6$saltsaltsaltsalt$'
"""

from __future__ import annotations

import hashlib

__all__ = ["CRYPT_ALPHABET", "SEED_ROUNDS", "sha512_crypt"]

#: The crypt(3) base-64 alphabet (salts and hashes use only these characters).
CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_DEFAULT_ROUNDS = 5000
#: The rounds palette-provision hashes node passwords with: 20 times crypt's default of 5000, so a guess against
#: a leaked seed costs 20 times more. About 90 ms per hash here in pure Python, once per deployment (the salt is the
#: deployment's, see ``derive_salt``); glibc checks it at login in under 30 ms. See docs/security.md.
SEED_ROUNDS = 100_000
_MAX_SALT = 16

# The byte order of the final base-64 encoding, from the specification (step 22, SHA-512 variant).
_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)  # fmt: skip


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(CRYPT_ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def sha512_crypt(password: str, salt: str, rounds: int = _DEFAULT_ROUNDS) -> str:
    """Return the ``$6$`` crypt hash of ``password`` with ``salt`` (at most 16 characters are used).

    ``rounds`` other than the default 5000 is written into the hash as ``rounds=N$`` (clamped to 1000..999999999,
    as the specification says).

    Raises:
        ValueError: the salt is empty or contains ``$`` or a newline.
    """
    if not salt or any(c in salt for c in "$:\n"):
        raise ValueError("a crypt salt must be non-empty and contain no '$', ':' or newline")
    pw = password.encode("utf-8")
    s = salt.encode("utf-8")[:_MAX_SALT]
    custom_rounds = rounds != _DEFAULT_ROUNDS
    rounds = max(1000, min(999_999_999, rounds))

    b = hashlib.sha512(pw + s + pw).digest()
    a = hashlib.sha512(pw + s)
    a.update(_repeat(b, len(pw)))
    i = len(pw)
    while i > 0:
        a.update(b if i & 1 else pw)
        i >>= 1
    c = a.digest()

    p = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    ss = _repeat(hashlib.sha512(s * (16 + c[0])).digest(), len(s))

    # Round r hashes (odd r) p [ss] [p] c or (even r) c [ss] [p] p, with ss when r % 3 and the middle p when r % 7:
    # which parts depends on r % 42 only. One hash call per round over bytes joined in advance is half the time
    # of feeding each part separately (the calls, not the hashing, dominate for these short inputs).
    table = []
    for r in range(42):
        middle = (ss if r % 3 else b"") + (p if r % 7 else b"")
        table.append((p + middle, b"") if r & 1 else (b"", middle + p))
    sha512 = hashlib.sha512
    for r in range(rounds):
        before, after = table[r % 42]
        c = sha512(before + c + after).digest()

    encoded = "".join(_b64_24(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + _b64_24(0, 0, c[63], 2)
    prefix = f"$6$rounds={rounds}$" if custom_rounds else "$6$"
    return f"{prefix}{s.decode('utf-8')}${encoded}"
