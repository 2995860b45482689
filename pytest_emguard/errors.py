"""Errors that reach the user.  Each one says where (file or option), what is wrong and how to fix it."""

from __future__ import annotations

import traceback

__all__ = ["ConfigError", "EmguardError", "LibraryError", "ModelError", "first_line", "library_error"]

# the libraries whose errors a run translates, with what to check first (the fix of the message)
_LIBRARIES = {
    "peft": "check that the adapter was trained on this base (--em-base) with the installed peft version",
    "transformers": "check the model files (config.json, weights, tokenizer) and that the installed transformers "
    "version supports this model",
    "safetensors": "check the weight files: a download or copy may have been cut short",
    "torch": "a numerical or device failure: lower --em-batch-size, or try --em-dtype=float32",
    "sqlite3": "the cache store: check free disk space and permissions of --em-cache-dir; move a damaged "
    "records.sqlite3 aside",
    "openai": "check the endpoint URL, the model name and the key (OPENAI_API_KEY); finished batches are kept "
    "in the cache",
    "httpx": "the endpoint could not be reached: check its URL and that it is serving",
    "vllm": "check the model and the --em-engine-arg values against the installed vLLM",
}


class EmguardError(Exception):
    """Base class: ``where`` names the file or option, ``fix`` says what to do."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem}\n  fix: {fix}")


class ConfigError(EmguardError):
    """Bad options, thresholds or model paths, found before any compute is spent."""


class ModelError(EmguardError):
    """A model or judge could not be loaded or answered in a way we cannot use."""


class LibraryError(ModelError):
    """A library (peft, transformers, torch, sqlite, the openai SDK, ...) failed during a run: one short message
    with the original's first line in place of its traceback (``pytest -vv`` shows the traceback)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, at most ``limit`` characters: some library errors run
    to hundreds of lines (peft lists every layer)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _library(exc: BaseException) -> str | None:
    """The library an exception came out of: its type's package, else the outermost frame of its traceback that
    lies in one (builtin exceptions such as ValueError are raised by the libraries too)."""
    top = type(exc).__module__.split(".")[0]
    if top in _LIBRARIES:
        return top
    for frame in traceback.extract_tb(exc.__traceback__):
        parts = frame.filename.replace("\\", "/").split("/")
        for name in _LIBRARIES:
            if name in parts[:-1] or f"{name}.py" == parts[-1]:
                return name
    return None


def library_error(exc: BaseException, where: str) -> LibraryError | None:
    """``exc`` as one short message naming the library and the fix, or None where it did not come out of one
    of the libraries a run drives (a failure of the plugin's own code keeps its traceback)."""
    if isinstance(exc, EmguardError):
        return None
    name = _library(exc)
    if name is None:
        return None
    fix = _LIBRARIES[name]
    if name == "torch" and "out of memory" in str(exc).lower():
        fix = "out of memory: lower --em-batch-size (or --em-max-new-tokens), or use a smaller --em-dtype"
    error = LibraryError(where, f"{name} failed: {first_line(exc)}", f"{fix} (pytest -vv shows the traceback)")
    error.__cause__ = exc
    return error
