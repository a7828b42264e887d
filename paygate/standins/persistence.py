"""The local run's stand-ins keep their state in a JSON file each (under instance/), across restarts."""

import json
import logging
import os
import tempfile

log = logging.getLogger(__name__)


def keep(state, path: str) -> None:
    """Load `state` from `path` if it exists, then write it there after each change (atomically: a whole file
    or the previous one, never half of one). `state` has dump(), load(dict) and an on_change hook."""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                state.load(json.load(f))
        except (OSError, ValueError) as exc:
            aside = path + ".unreadable"
            os.replace(path, aside)
            log.warning(
                "local stand-in: could not read %s (%s); starting empty, the file is kept as %s",
                path,
                type(exc).__name__,
                aside,
            )
    state.on_change = lambda changed: write(path, changed.dump())


def write(path: str, data: dict) -> None:
    """Replace `path` with `data` as JSON, atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".standin-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
