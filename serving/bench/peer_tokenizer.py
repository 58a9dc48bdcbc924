"""Build the offline tokenizer that aiperf and the sim workers share in `bench live`.

aiperf needs a tokenizer to turn a Mooncake trace's `hash_ids` into text (each id becomes a
fixed run of 512 tokens); its `builtin` one (tiktoken o200k_base) downloads its vocabulary on
first use, which an air-gapped host cannot do, and a Hugging Face model id needs the hub. So the
peer install trains a small byte-level BPE here, offline and deterministically, on the text
corpus aiperf ships (the one it samples prompts from), and saves it as a tokenizer directory
that both `transformers.AutoTokenizer` (aiperf) and `tokenizers.Tokenizer.from_file` (the
workers' `--tokenizer`) load. Byte-level BPE decodes back to the exact text it encoded, so a
prompt's token count on the workers matches the trace's `input_length` closely.

Run as a script by the peer environment's Python (`python peer_tokenizer.py OUTDIR [CORPUS]`):
it imports only the standard library and `tokenizers`, never agentctl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VOCAB_SIZE = 8192
SPECIAL = "<|endoftext|>"


def default_corpus() -> Path:
    """aiperf's prompt corpus, found through the installed package."""
    import importlib.util

    spec = importlib.util.find_spec("aiperf")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("aiperf is not installed in this environment: give a corpus path")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "dataset" / "generator" / "assets" / "shakespeare.txt"


def build(out_dir: Path, corpus: Path) -> Path:
    """Train on `corpus`, write `tokenizer.json` + `tokenizer_config.json` into `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1 << 20,
        "eos_token": SPECIAL,
        "bos_token": SPECIAL,
        "unk_token": SPECIAL,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir / "tokenizer.json"


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: peer_tokenizer.py OUTDIR [CORPUS]", file=sys.stderr)
        return 2
    corpus = Path(argv[1]) if len(argv) == 2 else default_corpus()
    print(build(Path(argv[0]), corpus))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
