"""Text corpora for language models: reading, byte-level BPE, cached token arrays, an on-device sampler.

``read_corpus(paths)`` reads plain-text or gzip files (one file, a folder of ``*.txt`` / ``*.txt.gz``, or a
list) as UTF-8 and checks each: a binary file (a NUL byte) or invalid UTF-8 is a ``ValueError`` naming the file
and the byte offset; an empty corpus is an error. ``load_corpus(paths, vocab_size, val_fraction, cache_dir)``
splits every file at the first line break after (1 − val_fraction) of its characters (the end of each file is
held out), trains a byte-level BPE (Radford et al. 2019, §2.2: BPE over UTF-8 bytes, so any text encodes; Hugging
Face ``tokenizers``, the ``[lm]`` extra, imported lazily) on the training parts only, and encodes both parts.

Determinism: the files are read in a fixed order (a folder sorted by name), encoded in fixed chunks (whole
lines, about ``_CHUNK`` characters), and the BPE trainer breaks count ties by pair order, so the same files and
vocabulary size give the same tokenizer JSON and the same ids. The result is cached as one ``.npz`` (token
arrays as uint16 when the vocabulary fits, else uint32, the tokenizer JSON, per-file token counts) keyed by the
sha256 of the corpus text, the vocabulary size and the split, written atomically; the run directory gets a copy
of the tokenizer (``tokenizer.json``).

``TokenSampler`` keeps the training tokens on the device and draws batches of random windows of
``context + 1`` tokens (inputs and next-token targets) from a seeded CPU ``torch.Generator``; its state (the
generator's) goes into checkpoints, so a resumed run draws the same batches. Windows are taken from the
concatenated training parts of all files (a window may span a file boundary).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import torch

from .._extras import MissingExtraError
from .._io import atomic_write_bytes
from ..validation import check_scalar

__all__ = ["TextCorpus", "TokenSampler", "read_corpus", "train_tokenizer", "load_corpus", "token_dtype",
           "corpus_files", "default_cache_dir", "MAX_VOCAB", "MIN_VOCAB"]

log = logging.getLogger(__name__)

MIN_VOCAB = 256  #: the byte alphabet of a byte-level BPE
MAX_VOCAB = 2 ** 32  #: ids must fit uint32
_CHUNK = 1 << 16  #: characters per encoding chunk (whole lines)
_CACHE_FORMAT = "ncollapse.text/1"
_SUFFIXES = (".txt", ".txt.gz")


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise MissingExtraError("language-model data needs Hugging Face tokenizers; install it with: "
                                "pip install 'ncollapse[lm]'") from None
    return tokenizers


def corpus_files(paths) -> list[Path]:
    """The files of ``paths``: a file, a folder (its ``*.txt`` and ``*.txt.gz``, sorted by name) or a list of
    either, in the given order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_SUFFIXES))
            if not found:
                raise ValueError(f"text folder {p} holds no *.txt or *.txt.gz files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"text file {p} does not exist")
    if not files:
        raise ValueError("the text corpus is empty: give at least one file or folder")
    return files


def _read_text(path: Path) -> str:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable gzip file ({exc}); give plain text or a valid .gz") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"{path} looks binary (a NUL byte at offset {nul}); give UTF-8 text files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                         "convert it with iconv -t utf-8") from None


def read_corpus(paths) -> list[tuple[str, str]]:
    """(file name, text) of every file of ``paths`` (see ``corpus_files``); an empty corpus is an error."""
    texts = [(str(f), _read_text(f)) for f in corpus_files(paths)]
    if not any(text.strip() for _, text in texts):
        raise ValueError(f"the text corpus is empty: {', '.join(name for name, _ in texts)} hold no text")
    return texts


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2 ** 16 else np.dtype(np.uint32)


def _check_vocab(vocab_size) -> int:
    check_scalar(vocab_size, "vocab_size", int)
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size == {vocab_size}, must be in [{MIN_VOCAB}, {MAX_VOCAB}]: at least the 256 "
                         "bytes of a byte-level BPE and at most what uint32 ids hold")
    return vocab_size


def _split(text: str, val_fraction: float) -> tuple[str, str]:
    """(training part, held-out end): the cut is the first line break after (1 − val_fraction)·len(text)."""
    if val_fraction == 0:
        return text, ""
    cut = text.find("\n", int(len(text) * (1.0 - val_fraction)))
    cut = len(text) if cut < 0 else cut + 1
    return text[:cut], text[cut:]


def _chunks(text: str) -> list[str]:
    """Whole lines grouped into pieces of about ``_CHUNK`` characters (a fixed rule, so ids are reproducible)."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + _CHUNK)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def train_tokenizer(texts, vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``vocab_size`` ids trained on ``texts`` (strings)."""
    tk = _require_tokenizers()
    _check_vocab(vocab_size)
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator((c for text in texts for c in _chunks(text)), trainer=trainer)
    return tokenizer


def _encode(tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    pieces = [np.asarray(e.ids, dtype=dtype) for e in tokenizer.encode_batch(_chunks(text))]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


@dataclass(frozen=True)
class TextCorpus:
    """Token ids of a corpus: ``train`` and ``val`` (numpy uint16/uint32), the tokenizer JSON, the vocabulary
    size, the files and per-file token counts (training, held-out), and the corpus key (sha256)."""

    train: np.ndarray
    val: np.ndarray
    tokenizer_json: str
    vocab_size: int
    files: tuple[str, ...]
    file_tokens: tuple[tuple[int, int], ...]
    key: str

    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` (encode / decode text)."""
        return _require_tokenizers().Tokenizer.from_str(self.tokenizer_json)

    def train_counts(self) -> np.ndarray:
        """How often each id occurs in the training tokens (length ``vocab_size``)."""
        return np.bincount(self.train, minlength=self.vocab_size)

    def write_tokenizer(self, path) -> Path:
        """Write the tokenizer JSON to ``path`` atomically."""
        return atomic_write_bytes(path, self.tokenizer_json.encode("utf-8"))


def _corpus_key(texts: list[tuple[str, str]], vocab_size: int, val_fraction: float) -> str:
    h = hashlib.sha256(f"{_CACHE_FORMAT} vocab={vocab_size} val={val_fraction!r}\n".encode())
    for _, text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ncollapse/text`` (``~/.cache/ncollapse/text`` when unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ncollapse" / "text"


def _read_cache(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return {"train": z["train"], "val": z["val"], "meta": meta}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("token cache %s is unreadable (%s); tokenising again", path, exc)
        return None


def load_corpus(paths, vocab_size: int, val_fraction: float = 0.05, cache_dir=None) -> TextCorpus:
    """Read ``paths``, train the BPE on the training parts, encode; cached in ``cache_dir`` by corpus sha256."""
    _check_vocab(vocab_size)
    check_scalar(val_fraction, "val_fraction", Real, low=0.0, high=0.5)
    texts = read_corpus(paths)
    key = _corpus_key(texts, vocab_size, val_fraction)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{key}.npz"
    hit = _read_cache(path) if path.is_file() else None
    if hit is None:
        dtype = token_dtype(vocab_size)
        parts = [_split(text, val_fraction) for _, text in texts]
        tokenizer = train_tokenizer([a for a, _ in parts], vocab_size)
        encoded = [(_encode(tokenizer, a, dtype), _encode(tokenizer, b, dtype)) for a, b in parts]
        meta = {"format": _CACHE_FORMAT, "tokenizer": tokenizer.to_str(), "vocab_size": tokenizer.get_vocab_size(),
                "file_tokens": [[len(a), len(b)] for a, b in encoded]}
        hit = {"train": np.concatenate([a for a, _ in encoded]), "val": np.concatenate([b for _, b in encoded]),
               "meta": meta}
        buffer = io.BytesIO()
        np.savez(buffer, train=hit["train"], val=hit["val"], meta=np.array(json.dumps(meta)))
        atomic_write_bytes(path, buffer.getvalue())
        log.info("tokenised %d files into %d training and %d held-out tokens (cache %s)", len(texts),
                 len(hit["train"]), len(hit["val"]), path)
    meta = hit["meta"]
    if len(hit["train"]) < 2:
        raise ValueError(f"the text corpus gives {len(hit['train'])} training tokens; give more text")
    return TextCorpus(hit["train"], hit["val"], meta["tokenizer"], vocab_size, tuple(n for n, _ in texts),
                      tuple(tuple(t) for t in meta["file_tokens"]), key)


class TokenSampler:
    """Random windows of ``context + 1`` training tokens kept on ``device``: ``next()`` gives (inputs, targets),
    both (batch_size, context) int64, targets shifted by one token.

    Starts are uniform over the windows that fit, drawn from a CPU generator seeded with (seed, rank), so every
    DDP rank draws its own batches; ``state_dict`` / ``load_state_dict`` carry the generator's state.
    """

    def __init__(self, tokens, batch_size: int, context: int, *, device=None, seed: int = 0, rank: int = 0):
        check_scalar(batch_size, "batch_size", int, low=1)
        check_scalar(context, "context", int, low=1)
        data = torch.as_tensor(np.asarray(tokens).astype(np.int32, copy=False))
        if data.ndim != 1 or len(data) < context + 1:
            raise ValueError(f"the training tokens ({len(data)}) are fewer than one window of context + 1 = "
                             f"{context + 1}; give more text or a shorter context")
        self.tokens = data.to(device) if device is not None else data
        self.batch_size, self.context = batch_size, context
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + 104_729 * (rank + 1))
        self._offsets = torch.arange(context + 1, device=self.tokens.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.tokens) - self.context, (self.batch_size,), generator=self.generator)
        window = self.tokens[starts.to(self.tokens.device)[:, None] + self._offsets].long()
        return window[:, :-1], window[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
