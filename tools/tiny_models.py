"""Tiny random checkpoints in real Hugging Face format, built offline in milliseconds.

Tests, examples and the local stack need models that load through the same code path as
real ones (`config.json` + `model.safetensors` + `tokenizer.json`, read by
`transformers.pipeline`) without a hub download. Weights are random, so outputs are
meaningless but deterministic: each checkpoint is built from a fixed seed. (The GPT-2s'
output layer is scaled so that they at least babble in corpus words: see _favour_words.)

    python -m tools.tiny_models DIR
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

# Written last, inside the temporary directory, so a directory that has it is complete; it
# holds the build's fingerprint.
MARKER = ".modelyard-complete"

_MAX_POSITIONS = 128
# Ten times the usual 0.02: random weights that small give near-uniform outputs (every label
# 0.5, every zero-shot score 1/n), which would make tests of ranking and batching vacuous.
_INIT_RANGE = 0.2
_EOS = "<|endoftext|>"
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]

_CORPUS = """\
The quick brown fox jumps over the lazy dog.
A man is playing a guitar on the street.
Someone plays an instrument in the park.
The stock market fell sharply today.
Investors worried about rising interest rates.
I loved this movie, it was wonderful and moving.
This film was terrible and boring, I hated it.
The food at the restaurant was delicious.
The service was slow and the waiter was rude.
Alice moved from Paris to London last year.
Bob works for Google in New York.
Maria visited the Eiffel Tower with her friends.
The United Nations met in Geneva on Monday.
Apple announced a new phone in California.
It is raining in Berlin and the trains are late.
Children are playing football in the garden.
She reads a book every night before sleeping.
The weather is sunny and warm this afternoon.
He drinks coffee with milk and sugar.
Scientists discovered a new species of frog.
The team won the championship after a long season.
Please send me the report by Friday morning.
The cat sleeps on the sofa all day long.
We should plan a trip to the mountains.
Music makes people happy and brings them together.
This example is about sports, politics or business.
The hypothesis is entailed by the premise.
The premise contradicts the hypothesis.
Technology companies hire many engineers.
A doctor helps patients in the hospital.
The river flows through the old city.
Good morning, how are you doing today?
I think this product is great value for money.
The package arrived broken and late.
Elections will be held in the spring.
Engineers build bridges, roads and tunnels.
"""


def _sentences() -> Iterator[str]:
    return (line for line in _CORPUS.splitlines() if line)


def _gpt2_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000,  # more than the corpus has merges for: every corpus word is one token
        special_tokens=[_EOS],
        # every byte is in the vocabulary, so any text (any language, emoji) tokenizes
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_sentences(), trainer=trainer)
    # transformers leaves the tokenizer __init__ unannotated
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=_EOS,
        eos_token=_EOS,
        unk_token=_EOS,
        # GPT-2 has no pad token; generation pads batches with eos, on the left
        pad_token=_EOS,
        padding_side="left",
        model_max_length=_MAX_POSITIONS,
    )


# Plain "role: content" lines, as simple chat templates go; like real ones, it refuses a
# role it does not know (through raise_exception), and shows a message's name.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ('system', 'user', 'assistant') %}"
    "{{ raise_exception('roles are system, user and assistant') }}{% endif %}"
    "{{ message['role'] }}{% if message['name'] %} {{ message['name'] }}{% endif %}: "
    "{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _gpt2_chat_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = _gpt2_tokenizer()
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def _wordpiece_vocab() -> dict[str, int]:
    # Built by hand, not with WordPieceTrainer: the trainer orders continuation pieces by
    # hash-map iteration, so its vocabulary (and the checkpoint) would differ run to run.
    words = sorted({w for w in re.findall(r"\w+|[^\w\s]", _CORPUS.lower())})
    chars = sorted({c for w in words for c in w})
    pieces = _BERT_SPECIALS + chars + [f"##{c}" for c in chars] + words
    return {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}


def _bert_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(vocab=_wordpiece_vocab(), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # transformers leaves the tokenizer __init__ unannotated
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=_MAX_POSITIONS,
    )


def _gpt2(layers: int) -> Callable[[PreTrainedTokenizerFast], PreTrainedModel]:
    def build(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
        eos = tokenizer.eos_token_id
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=layers,
            n_head=2,
            n_positions=_MAX_POSITIONS,
            initializer_range=_INIT_RANGE,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
        model = GPT2LMHeadModel(config)
        model.generation_config.pad_token_id = eos
        _favour_words(model, tokenizer)
        return model

    return build


def _favour_words(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Shapes the random output layer so greedy text is corpus words split by spaces.

    Left alone, a random GPT-2 mostly picks raw-byte tokens: control characters and halves
    of UTF-8 sequences, with no spaces, and so nothing a word-by-word streamer can emit
    before the end. The output layer is tied to the token embeddings, so scaling a token's
    embedding scales its logits: shrink raw bytes and eos (generation then runs to
    max_new_tokens) and grow tokens that start a word.
    """
    weights = model.transformer.wte.weight
    with torch.no_grad():
        for token, index in tokenizer.get_vocab().items():
            text = token.replace("\u0120", " ")  # byte-level BPE writes a space as U+0120
            if index == tokenizer.eos_token_id or not all(32 <= ord(c) < 127 for c in text):
                weights[index] *= 0.05
            elif text.startswith(" ") and len(text) > 1:
                weights[index] *= 2.0


def _bert_config(tokenizer: PreTrainedTokenizerFast, labels: list[str] | None) -> BertConfig:
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=_MAX_POSITIONS,
        initializer_range=_INIT_RANGE,
        pad_token_id=tokenizer.pad_token_id,
    )
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    return config


def _bert_sequence(labels: list[str]) -> Callable[[PreTrainedTokenizerFast], PreTrainedModel]:
    return lambda tok: BertForSequenceClassification(_bert_config(tok, labels))


def _bert_token(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    return BertForTokenClassification(_bert_config(tokenizer, _NER_LABELS))


def _bert_mlm(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    return BertForMaskedLM(_bert_config(tokenizer, None))


_Spec = tuple[
    int, Callable[[], PreTrainedTokenizerFast], Callable[[PreTrainedTokenizerFast], PreTrainedModel]
]

# name -> (seed, tokenizer builder, model builder)
_SPECS: dict[str, _Spec] = {
    "tiny-gpt2": (1, _gpt2_tokenizer, _gpt2(layers=2)),
    "tiny-distilgpt2": (2, _gpt2_tokenizer, _gpt2(layers=1)),
    "tiny-bert-sentiment": (3, _bert_tokenizer, _bert_sequence(["NEGATIVE", "POSITIVE"])),
    "tiny-bert-nli": (
        4,
        _bert_tokenizer,
        _bert_sequence(["contradiction", "neutral", "entailment"]),
    ),
    "tiny-bert-ner": (5, _bert_tokenizer, _bert_token),
    "tiny-bert-mlm": (6, _bert_tokenizer, _bert_mlm),
    # the GPT-2 above with a chat template: for llm/v1/chat (tiny-gpt2 has none)
    "tiny-gpt2-chat": (1, _gpt2_chat_tokenizer, _gpt2(layers=2)),
}

CHECKPOINT_NAMES: tuple[str, ...] = tuple(_SPECS)

# Model init draws from torch's one global generator: two threads seeding and drawing at
# once would interleave and make the weights depend on timing.
_SEEDED_INIT = threading.Lock()


def _build_into(directory: Path, spec: _Spec) -> None:
    seed, make_tokenizer, make_model = spec
    tokenizer = make_tokenizer()
    # fork_rng: seeding must not disturb the caller's global torch random state
    with _SEEDED_INIT, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def build_checkpoint(root: Path, name: str) -> Path:
    """Builds one named checkpoint under `root` unless an up-to-date one is already there."""
    if name not in _SPECS:
        raise ValueError(f"unknown tiny checkpoint {name!r}; known: {', '.join(_SPECS)}")
    target = root / name
    if _is_current(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: a rename is atomic, so readers and concurrent
    # builders only ever see a complete checkpoint or none.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        staging.chmod(0o755)  # mkdtemp makes it owner-only; checkpoints are meant to be shared
        _build_into(staging, _SPECS[name])
        (staging / MARKER).write_text(_fingerprint())
        _move_aside_unless_current(target)
        try:
            staging.rename(target)
        except OSError:
            if not _is_current(target):  # not a concurrent builder winning: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.cache
def _fingerprint() -> str:
    """Changes whenever this builder or the libraries that shape its output change, so a
    cached checkpoint from an older build is rebuilt instead of silently reused."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for version in (torch.__version__, transformers.__version__, tokenizers.__version__):
        digest.update(version.encode())
    return digest.hexdigest()[:16] + "\n"


def _is_current(directory: Path) -> bool:
    try:
        return (directory / MARKER).read_text() == _fingerprint()
    except OSError:
        return False


def _move_aside_unless_current(target: Path) -> None:
    """Removes an outdated or partial `target` (left by an older build or another tool)."""
    if not target.exists() or _is_current(target):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    try:
        target.rename(aside / target.name)  # atomic: nobody sees it half deleted
    except FileNotFoundError:
        pass  # a concurrent builder moved it first
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def build_tiny_checkpoints(root: Path) -> dict[str, Path]:
    """Builds (or reuses) every tiny checkpoint under `root`; returns name -> directory."""
    return {name: build_checkpoint(root, name) for name in _SPECS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="where to write the checkpoints")
    args = parser.parse_args(argv)
    # a per-shard "Writing model shards" bar for 100 KB files is noise on a terminal
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # unannotated
    for name, path in build_tiny_checkpoints(args.directory).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
