"""The one exception type of the library.

Every problem caused by the *input* (a corrupt NIfTI, a malformed ``dataset.json``, a config key
with the wrong type, ...) is raised as :class:`CTSegError` with a message that names the file or
key and says what is wrong.  The CLI prints that message on one line and exits with status 2;
anything else is a bug in ctseg and is shown with its traceback.
"""

from __future__ import annotations

from pathlib import Path


class CTSegError(Exception):
    """A clear, user-facing error about bad input (file, dataset, config or CLI argument)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)
