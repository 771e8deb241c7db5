"""How much a configured signing secret can be trusted to be secret (pure).

A secret must carry at least 128 bits, estimated as length × bits per character of the smallest
usual alphabet that holds it (hex 4, base64url 6, any other printable text 6.5). Strings that are
one short unit repeated (``aaaa…``, ``abab…``) and the placeholders the docs show are refused
whatever their length: a publicly known signing key signs anybody's tokens.
"""

from __future__ import annotations

import string

MIN_BITS = 128
GENERATE_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"

_HEX = frozenset(string.hexdigits)
_BASE64URL = frozenset(string.ascii_letters + string.digits + "-_")
# Words that mark a value copied from documentation or an example rather than generated.
_PLACEHOLDER_MARKERS = (
    "<",
    ">",
    "random bytes",
    "token_urlsafe",
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "replaceme",
    "your-secret",
    "yoursecret",
    "example",
    "placeholder",
)


def estimated_bits(secret: str) -> float:
    """Length × bits per character of the smallest usual alphabet holding ``secret``."""
    chars = set(secret)
    if chars <= _HEX:
        per_char = 4.0
    elif chars <= _BASE64URL:
        per_char = 6.0
    else:
        per_char = 6.5
    return len(secret) * per_char


def _repeats_a_short_unit(secret: str) -> bool:
    """True for ``aaaa``, ``abab``, ``abcabc…``: the whole string is one unit repeated."""
    n = len(secret)
    for size in range(1, n // 2 + 1):
        if n % size == 0 and secret[:size] * (n // size) == secret:
            return True
    return False


def weakness(secret: str) -> str | None:
    """Why ``secret`` must not be used (a rule, never the secret itself), or None."""
    lowered = secret.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return f"looks like a placeholder from the docs; generate one with {GENERATE_HINT}"
    if _repeats_a_short_unit(secret):
        return f"is one short piece repeated; generate one with {GENERATE_HINT}"
    bits = estimated_bits(secret)
    if bits < MIN_BITS:
        return (
            f"carries about {bits:.0f} bits, under the {MIN_BITS} required (length × bits per "
            f"character: hex 4, base64url 6, other 6.5); generate one with {GENERATE_HINT}"
        )
    return None
