"""Performance settings of the transformer process, with the reason for each default.

One place for them: `tailsynth serve` (typer options), the container entry point (argparse, `add_arguments`),
the extra worker processes `tailsynth serve --workers N` starts (`argv`), and benchmarks/bench_serving.py
(`parse_pairs`, to compare settings side by side). The defaults are chosen from the request path, not from
timings; the benchmark is where they get measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field

from ..errors import ConfigError

EVENT_LOOPS = ("uvloop", "asyncio")
HTTP_PARSERS = ("h11", "httptools")


def _default_decode_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Tuning:
    # Threads that parse, hash and decode images. Pillow and hashlib release the GIL while they work, so decoding
    # runs beside the event loop and beside each other; more threads than cores only add switching, and every
    # extra thread is memory for one more decoded image in flight. One per core, at most 4.
    decode_threads: int = field(default_factory=_default_decode_threads,
                                metadata={"help": "image parse/decode threads (default: one per core, at most 4)"})
    # JPEG DCT scaling to the model resolution before the resize (tailsynth.serve.images.decode_image): most of a
    # decode is spent on pixels the resize throws away. Off (the default) gives the training reader's exact pixels:
    # draft decoding changed 1 of 64 top-1 answers on the ISIC sample, a change a validated endpoint must not make
    # silently.
    jpeg_draft: bool = field(default=False, metadata={"help": "decode JPEGs at 1/2..1/8 scale when that is still "
                                                             ">= the model resolution (off: exact decode)"})
    # Per-request log lines: uvicorn's access line, kserve's latency line and two timing lines, each formatted and
    # written under the GIL on the event loop. The prediction records already log every image; refused requests
    # and predictor errors are still logged (tailsynth.serve.transformer._quiet_handlers).
    request_logs: bool = field(default=False, metadata={"help": "log one access and timing line per request"})
    # uvloop (libuv) runs the event loop's socket I/O and callbacks in C: cheaper per request for the served
    # connections and for the Triton client's. asyncio when uvloop is not installed.
    event_loop: str = field(default_factory=lambda: "uvloop" if uvloop_available() else "asyncio",
                            metadata={"help": f"event loop: {' or '.join(EVENT_LOOPS)}"})
    # h11 (pure Python) stops reading a request head at a fixed size; httptools (C) parses faster but buffers
    # heads of any size (200 MB were accepted), leaving only the guard's check after the fact. Safety first.
    http_parser: str = field(default="h11", metadata={"help": f"HTTP parser: {' or '.join(HTTP_PARSERS)} "
                                                              "(httptools: faster, unbounded request heads)"})
    # Predictor calls in flight per transformer process (tailsynth.serve.coalesce). Requests that arrive while
    # they run are merged into the next call, so the per-call cost (HTTP round trip, Triton's per-request work) is
    # paid per batch instead of per image; a lone request still goes out at once. 0: one call per request.
    coalesce: int = field(default=1, metadata={"help": "predictor calls in flight; concurrent requests are merged "
                                                       "into the next call (0: one call per request)"})
    # Transformer processes sharing the port (SO_REUSEPORT; `tailsynth serve` only, a cluster scales pods).
    # The Python request path holds the GIL, so one process uses at most about one core for it; on 2 cores the
    # other core is Triton's, so 1. Raise it on larger machines.
    workers: int = field(default=1, metadata={"help": "transformer processes on the same port (tailsynth serve)"})

    def __post_init__(self):
        if self.decode_threads < 1:
            raise ConfigError(f"decode_threads {self.decode_threads}: must be >= 1")
        if self.coalesce < 0:
            raise ConfigError(f"coalesce {self.coalesce}: must be >= 0")
        if self.workers < 1:
            raise ConfigError(f"workers {self.workers}: must be >= 1")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(f"event_loop {self.event_loop!r}: expected one of {EVENT_LOOPS}")
        if self.event_loop == "uvloop" and not uvloop_available():
            raise ConfigError("event_loop uvloop: the uvloop package is not installed (pip install uvloop)")
        if self.http_parser not in HTTP_PARSERS:
            raise ConfigError(f"http_parser {self.http_parser!r}: expected one of {HTTP_PARSERS}")

    def argv(self, exclude: tuple[str, ...] = ("workers",)) -> list[str]:
        """These settings as transformer command-line flags (`add_arguments` reads them back)."""
        out = []
        for f in dataclasses.fields(self):
            if f.name in exclude:
                continue
            v = getattr(self, f.name)
            out += [f"--{f.name}", ("1" if v else "0") if isinstance(v, bool) else str(v)]
        return out

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (1/0, true/false, on/off)")


def _converter(f: dataclasses.Field):
    kind = f.type if isinstance(f.type, type) else {"int": int, "bool": bool, "str": str}[str(f.type)]
    return _bool if kind is bool else kind


def add_arguments(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ("workers",)) -> None:
    """One flag per field (--decode_threads 2, --jpeg_draft 0, ...); absent flags keep the defaults."""
    for f in dataclasses.fields(Tuning):
        if f.name not in exclude:
            p.add_argument(f"--{f.name}", type=_converter(f), default=None, help=f.metadata["help"])


def from_namespace(ns: argparse.Namespace) -> Tuning:
    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(Tuning) if getattr(ns, f.name, None) is not None}
    return Tuning(**given)


def convert(name: str, text: str):
    """The value of field NAME from text ("2", "0", "on", "uvloop"); ConfigError for unknown names and bad values."""
    fields = {f.name: f for f in dataclasses.fields(Tuning)}
    if name not in fields:
        raise ConfigError(f"tuning {name!r}: expected one of {sorted(fields)}")
    try:
        return _converter(fields[name])(text)
    except ValueError as e:
        raise ConfigError(f"tuning {name}: {e}") from None
