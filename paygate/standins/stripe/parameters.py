"""The parameters each operation knows: Stripe refuses any other ("Received unknown parameter: foo[bar]"). A route
declares its own as bracket paths (`known`); one without a declaration accepts anything."""

import re

ANY = "*"  # below this, any key (metadata's own keys)


def known(*paths: str) -> dict:
    """The parameters an operation knows, as a tree, from bracket paths: "mode", "line_items[][price]" (each item of
    an array), "metadata[*]" (any key below), "automatic_tax[enabled]". A name without brackets accepts anything
    below it."""
    tree: dict = {}
    for path in paths:
        node = tree
        for part in _parts(path):
            node = node.setdefault(part, {})
    return tree


def _parts(path: str) -> list[str]:
    head, _, rest = path.partition("[")
    return [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]


def first_unknown(params, spec: dict, prefix: str = "") -> str | None:
    """The first parameter of the decoded `params` that `spec` (from `known`) does not name, as Stripe names it
    (line_items[1][prize]); None when all are known."""
    if ANY in spec or not spec:
        return None
    if isinstance(params, list):
        if "" not in spec:  # an array where the spec names keys: Stripe reads it as keys 0, 1, ...
            return f"{prefix}[0]"
        for i, item in enumerate(params):
            found = first_unknown(item, spec[""], f"{prefix}[{i}]")
            if found:
                return found
        return None
    if not isinstance(params, dict):
        return None  # a scalar where an object may go ("" unsets it)
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key == "" or key not in spec:
            return name
        found = first_unknown(value, spec[key], name)
        if found:
            return found
    return None
