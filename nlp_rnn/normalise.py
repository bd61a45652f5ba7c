"""Text normalisation a tokenizer applies before every encode, stored with it (so with its bundle).

Steps, applied in this order whatever order they are listed in:
- `html`: HTML line breaks (`<br />`, `<p>`) become spaces, other tags are removed, entities
  (`&amp;`, `&#39;`) are decoded — raw web text such as IMDb reviews.
- `nfkc`: Unicode NFKC (compatibility characters such as ligatures and full-width forms folded).
- `lower`: lower-casing.
Every step is idempotent, so normalising an already normalised text changes nothing.
"""

import html
import re
import unicodedata
from collections.abc import Sequence

from nlp_rnn.errors import NlpRnnError

STEPS = ("html", "nfkc", "lower")
_BREAK = re.compile(r"<\s*(br|p|/p|div|/div)\s*/?\s*>", re.IGNORECASE)
_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]{0,200}>")


def check(steps: Sequence[str], where: str = "config: tokenizer.normalise") -> tuple[str, ...]:
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise NlpRnnError(f"{where}: unknown normalisation step {unknown[0]!r} (known: {', '.join(STEPS)})")
    return tuple(s for s in STEPS if s in steps)


def normalise(text: str, steps: Sequence[str]) -> str:
    """`text` after `steps`, repeated (at most 4 times) until nothing changes: idempotent."""
    if not steps:
        return text
    for _ in range(4):
        before, text = text, _once(text, steps)
        if text == before:
            break
    return text


def _once(text: str, steps: Sequence[str]) -> str:
    if "html" in steps:
        text = html.unescape(_TAG.sub("", _BREAK.sub(" ", text)))
    if "nfkc" in steps:
        text = unicodedata.normalize("NFKC", text)
    if "lower" in steps:
        text = text.lower()
    return text
