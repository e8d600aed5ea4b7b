"""Text corpora: reading and its errors, deterministic byte-level BPE, the token cache, the sampler."""

import gzip

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers", reason="the [lm] extra (Hugging Face tokenizers) is not installed")

from ncollapse.data.text import (TokenSampler, corpus_files, load_corpus, read_corpus, token_dtype,  # noqa: E402
                                 train_tokenizer)

WORDS = ("the quick brown fox jumps over a lazy dog while seven wise owls hum quietly near old stone walls "
         "and rivers run past green hills").split()


def _write_corpus(folder, files=2, lines=150, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        text = "\n".join(" ".join(rng.choice(WORDS, 10)) for _ in range(lines)) + "\n"
        if i % 2:
            (folder / f"part{i}.txt.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (folder / f"part{i}.txt").write_text(text, encoding="utf-8")
    return folder


def test_same_files_and_vocab_give_the_same_tokenizer_and_ids(tmp_path):
    corpus = _write_corpus(tmp_path / "text")
    a = load_corpus(corpus, 300, 0.1, cache_dir=tmp_path / "cache_a")
    b = load_corpus(corpus, 300, 0.1, cache_dir=tmp_path / "cache_b")  # trained again from scratch
    assert a.tokenizer_json == b.tokenizer_json and a.key == b.key
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.train.dtype == np.uint16 and a.tokenizer().get_vocab_size() == 300
    assert len(list((tmp_path / "cache_a").glob(f"{a.key}.npz"))) == 1
    again = load_corpus(corpus, 300, 0.1, cache_dir=tmp_path / "cache_a")  # from the cache
    assert np.array_equal(again.train, a.train) and again.tokenizer_json == a.tokenizer_json
    other = load_corpus(corpus, 280, 0.1, cache_dir=tmp_path / "cache_a")
    assert other.key != a.key and int(other.train.max()) < 280


def test_split_holds_out_the_end_of_each_file(tmp_path):
    corpus = _write_corpus(tmp_path / "text")
    c = load_corpus(corpus, 300, 0.2, cache_dir=tmp_path / "cache")
    texts = [t for _, t in read_corpus(corpus)]
    tok = c.tokenizer()
    (train0, val0), (train1, val1) = c.file_tokens
    assert len(c.train) == train0 + train1 and len(c.val) == val0 + val1
    assert tok.decode(c.val[:val0].tolist()) + tok.decode(c.val[val0:].tolist()) == "".join(
        t[t.find("\n", int(0.8 * len(t))) + 1:] for t in texts)
    assert tok.decode(c.train[:train0].tolist()) == texts[0][:texts[0].find("\n", int(0.8 * len(texts[0]))) + 1]
    assert 0.1 < len(c.val) / (len(c.train) + len(c.val)) < 0.3


def test_folder_order_and_real_gzip_text(tmp_path, shared_data):
    files = corpus_files(shared_data / "text")
    assert [f.name for f in files] == sorted(f.name for f in files) and len(files) >= 2
    name, text = read_corpus(files[0])[0]
    assert name == str(files[0]) and len(text) > 100_000 and "\x00" not in text


@pytest.mark.parametrize("content, match", [
    (b"", "corpus is empty"),
    (b"  \n\n", "corpus is empty"),
    (b"text\x00with a NUL", "looks binary .*offset 4"),
    ("caf\u00e9".encode("latin-1") + b" au lait", "not UTF-8 .*0xe9 at offset 3"),
])
def test_reader_errors_name_the_file_and_problem(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_corpus(path)


def test_reader_errors_for_paths_and_vocabulary(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.txt"):
        read_corpus(tmp_path / "empty")
    with pytest.raises(ValueError, match="corpus is empty"):
        read_corpus([])
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ValueError, match="not a readable gzip"):
        read_corpus(tmp_path / "broken.txt.gz")
    for vocab in (255, 2 ** 32 + 1):
        with pytest.raises(ValueError, match="vocab_size == .* must be in \\[256, 4294967296\\]"):
            train_tokenizer(["some text"], vocab)
    with pytest.raises(TypeError, match="vocab_size must be"):
        train_tokenizer(["some text"], 300.0)
    assert token_dtype(2 ** 16) == np.uint16 and token_dtype(2 ** 16 + 1) == np.uint32


def test_sampler_windows_are_shifted_seeded_and_resumable():
    tokens = np.arange(1000, dtype=np.uint16)
    s = TokenSampler(tokens, 4, 8, seed=3)
    x, y = s.next()
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 7, dtype=torch.int64))
    state = s.state_dict()
    after = [s.next() for _ in range(3)]
    s2 = TokenSampler(tokens, 4, 8, seed=3)
    s2.load_state_dict(state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(after, (s2.next() for _ in range(3))))
    assert not torch.equal(TokenSampler(tokens, 4, 8, seed=3, rank=1).next()[0], TokenSampler(tokens, 4, 8, seed=3).next()[0])
    with pytest.raises(ValueError, match="fewer than one window"):
        TokenSampler(np.arange(5), 2, 8)
