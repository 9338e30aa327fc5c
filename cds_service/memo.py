"""Answers remembered by the content they were computed from.

An EHR sends the same chart again each time the chart is opened, and many patients' orders name
the same drugs: what is computed from one piece of FHIR JSON alone (is this resource valid R4?
which drug value sets does this order belong to?) is computed once per process and content, not
once per call. Each memo keeps its last `size` answers, keyed by a digest of the content's JSON
text (the same content in the same key order), and is safe to share between threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson

T = TypeVar("T")


def content_key(content: Any) -> bytes | None:
    """A digest of `content`'s JSON text; None for what orjson would not write as it was read
    (an integer past 64 bits, a lone surrogate, a key that is not a string), or may write the
    same as something else (NaN and infinity are written as null: any text with a null)."""
    try:
        text = orjson.dumps(content)
    except orjson.JSONEncodeError:
        return None
    if b"null" in text:
        return None
    return hashlib.blake2b(text, digest_size=16).digest()


class ContentMemo(Generic[T]):
    """The last `size` answers of `compute`, by content (see the module docstring)."""

    def __init__(self, size: int, compute: Callable[..., T] | None = None) -> None:
        self._compute = compute or _no_default
        self.size = size
        self._answers: OrderedDict[bytes, T] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, content: Any, *args: Any) -> T:
        """compute(content, *args), remembered by content_key(content) (not remembered when
        there is none): the answer must depend on `content` alone, and is shared (never change
        it)."""
        return self.get(content_key(content), lambda: self._compute(content, *args))

    def get(self, key: bytes | None, compute: Callable[[], T]) -> T:
        """The answer remembered under `key`, else compute() (remembered unless `key` is None)."""
        if key is not None:
            with self._lock:
                if key in self._answers:
                    self._answers.move_to_end(key)
                    return self._answers[key]
        answer = compute()
        if key is not None:
            with self._lock:
                self._answers[key] = answer
                while len(self._answers) > self.size:
                    self._answers.popitem(last=False)
        return answer

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()


def _no_default(*_args: Any) -> Any:
    raise TypeError("this memo has no compute function: use get()")
