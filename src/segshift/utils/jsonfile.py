"""Reading a JSON file the user gave or a command wrote, with errors that name the file.

The writing side is :func:`segshift.utils.atomic.write_json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segshift.errors import InputFileError


def read_json(path: str | Path, missing: str, invalid: str = "is not valid JSON") -> Any:
    """The document in the JSON file ``path``.

    Args:
        path: the file.
        missing: the problem to report when the file does not exist (what it should be).
        invalid: the problem to report when its bytes are not UTF-8 JSON; the decoder's
            reason is appended in brackets.

    Raises:
        InputFileError: naming ``path``, for a missing file or one that is not JSON. Other
            ``OSError`` s (a folder, no permission) propagate.

    Example:
        >>> read_json("/nonexistent/state.json", "missing: not a checkpoint folder")
        Traceback (most recent call last):
        ...
        segshift.errors.InputFileError: /nonexistent/state.json: missing: not a checkpoint folder
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(path, missing) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"{invalid} ({exc})") from exc
