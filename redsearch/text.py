"""Text folding shared by the corpus loaders and the search environment."""

from __future__ import annotations

import unicodedata

# Letters and punctuation that NFKD does not decompose into ASCII.
_ASCII_REPLACEMENTS = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u00a0": " ",
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u00f8": "o", "\u00d8": "O", "\u0153": "oe",
    "\u0152": "OE", "\u0111": "d", "\u0110": "D", "\u0142": "l", "\u0141": "L", "\u00fe": "th",
    "\u00de": "Th", "\u00f0": "d", "\u00d0": "D", "\u0131": "i",
})


def fold_accents(text: str) -> str:
    """Fold Latin letters to ASCII where possible: ``"Alû"`` to ``"Alu"``, ``"Tromsø"`` to ``"Tromso"``.

    Combining marks are dropped after NFKD decomposition, and letters that do not
    decompose (``ø``, ``ß``, ``æ``, ...) and typographic quotes and dashes are
    replaced. Other characters are kept.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_REPLACEMENTS))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
