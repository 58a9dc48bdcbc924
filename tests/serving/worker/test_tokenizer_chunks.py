"""A long prompt encoded chunk by chunk (from the cache) gives exactly the ids of encoding it
whole, for the tokenizers where that holds, and the check tells the others apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentctl.serving.tokenizer import TokenizersTokenizer, cut_at_word_starts

tokenizers = pytest.importorskip("tokenizers")

_CORPUS = [
    "def main(argv): return 0  # the quick brown fox jumps over 13 lazy dogs",
    "SELECT * FROM table WHERE id = 42; naïve café élan, 日本語 テキスト 😀",
    "class Foo(Bar):\n    value = [1, 2, 3]\n\tother = {'a': b}\r\n",
] * 50


def _byte_level_bpe(tmp_path: Path) -> Path:
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=600, show_progress=False))
    path = tmp_path / "bpe.json"
    hf.save(str(path))
    return path


def _no_pre_tokenizer(tmp_path: Path) -> Path:
    """BPE with no pre-tokenizer: merges run across spaces, so a cut can change the ids."""
    from tokenizers import models, trainers

    hf = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>"], show_progress=False)
    hf.train_from_iterator(_CORPUS, trainer)
    path = tmp_path / "raw.json"
    hf.save(str(path))
    return path


_text = st.text(
    alphabet=st.sampled_from(list("abcdefXYZ019 _-()[]{}.,;:'\"\n\t  éü日😀")), max_size=3000
)


@settings(max_examples=60, deadline=None)
@given(_text, st.integers(min_value=8, max_value=200))
def test_cuts_join_back_and_fall_before_spaced_words(text: str, every: int) -> None:
    pieces = cut_at_word_starts(text, every)
    assert "".join(pieces) == text
    for piece in pieces[1:]:
        assert piece[0] == " " and piece[1].isalnum()


def test_byte_level_bpe_is_chunked_and_exact(tmp_path_factory: pytest.TempPathFactory) -> None:
    tok = TokenizersTokenizer(_byte_level_bpe(tmp_path_factory.mktemp("bpe")))
    assert tok.chunkable
    long = " ".join(_CORPUS) * 3
    whole = tok._encode_whole(long)
    assert tok.encode(long) == whole
    assert tok.encode(long) == whole, "from the cache"
    assert tok.encode(long + " and a new turn") == tok._encode_whole(long + " and a new turn")


@settings(max_examples=40, deadline=None)
@given(_text)
def test_byte_level_bpe_chunked_equals_whole_on_any_text(text: str) -> None:
    tok = _BPE[0]
    long = (text + " ") * (1 + 3 * 4096 // (len(text) + 1))
    assert tok.encode(long) == tok._encode_whole(long)


def test_tokenizer_merging_across_spaces_is_not_chunked(tmp_path: Path) -> None:
    tok = TokenizersTokenizer(_no_pre_tokenizer(tmp_path))
    assert not tok.chunkable
    long = " ".join(_CORPUS) * 3
    assert tok.encode(long) == tok._encode_whole(long)


_BPE: list[TokenizersTokenizer] = []


@pytest.fixture(autouse=True, scope="module")
def _bpe(tmp_path_factory: pytest.TempPathFactory) -> None:
    _BPE.append(TokenizersTokenizer(_byte_level_bpe(tmp_path_factory.mktemp("shared"))))
