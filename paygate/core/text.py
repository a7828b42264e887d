"""Text from outside (what a payer typed into Checkout, what LTIaaS says of an LMS), made fit to store and show.

`clean` is applied where such a string enters (the gateways' parsers): after it, a value never fails an
insert on PostgreSQL (no NUL, no lone surrogate), never reorders or hides what operators read (no U+202E,
no zero-width characters), never breaks a line of a log or a CSV, and fits its column.
"""

import unicodedata

# Control (Cc: NUL, ESC...), format (Cf: U+202E, U+200B, U+FEFF...) and surrogate (Cs) characters.
_DROPPED = frozenset(("Cc", "Cf", "Cs"))


def clean(value, max_len: int) -> str | None:
    """`value` as one line of visible text of at most `max_len` characters, or None.

    None stays None; numbers (and booleans) become their text; anything else that is not a string (a
    list, an object) is None. Line breaks, tabs and other white space fold to single spaces; control and
    format characters go; the text is NFC-normalised and cut to `max_len` (only its first 4 x max_len
    characters are read). Nothing left: None.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        try:
            value = str(value)
        except ValueError:  # an integer of thousands of digits
            return None
    elif not isinstance(value, str):
        return None
    value = value[: 4 * max_len + 256]  # bounds the work; what is cut would not have been kept
    text = "".join(" " if c.isspace() else c for c in value if c.isspace() or unicodedata.category(c) not in _DROPPED)
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return text[:max_len].rstrip() or None
