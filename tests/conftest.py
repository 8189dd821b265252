"""Shared fixtures: the real TyDi QA data, a tiny saved encoder, a small SQuAD pair, one finished run.

Training fixtures are session-scoped: one tiny run (a few seconds) serves the training, CLI and
evaluation tests alike. Everything works offline.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

# Never reach for the network: every model and tokenizer here is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Env var that points at the TyDi QA GoldP folder (or the data folder holding ``tydiqa-goldp``).
DATA_ENV = "REGTUNE_DATA_DIR"

#: The tiny encoder saved by ``tiny_model_dir``: big enough to learn a little, small enough to train in
#: a second. Its vocabulary is the bundled MiniLM tokenizer's, saved beside it.
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}

#: Articles taken from the real English TyDi files for ``tiny_squad`` (one question per article).
TRAIN_ARTICLES = 40
DEV_ARTICLES = 20

#: A training run that finishes in seconds on a busy CPU: 9 steps of 4 windows, checkpoints every 3.
FAST_TRAIN: dict[str, Any] = {
    "num_registers": 4,
    "register_lr": 1e-2,  # large, so the registers visibly move in 9 steps
    "lr": 1e-3,
    "max_steps": 9,
    "batch_size": 4,
    "max_length": 128,
    "doc_stride": 32,
    "warmup_ratio": 0.0,
    "save_steps": 3,
    "logging_steps": 1,
    "eval_batch_size": 32,
    "seed": 7,
}


def find_data_dir() -> Path | None:
    """The TyDi QA GoldP folder: ``$REGTUNE_DATA_DIR`` (itself or its ``tydiqa-goldp``), else ../shared."""
    env = os.environ.get(DATA_ENV)
    if env:
        folder = Path(env) / "tydiqa-goldp" if (Path(env) / "tydiqa-goldp").is_dir() else Path(env)
    else:
        folder = Path(__file__).parents[1].parent / "shared/data/tydiqa-goldp"
    return folder if folder.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real TyDi QA GoldP folder; a failure in CI and a skip elsewhere when it is absent."""
    folder = find_data_dir()
    if folder is None:
        missing_data("TyDi QA GoldP data")
    return folder  # type: ignore[return-value]


def squad_slice(source: Path, target: Path, *, articles: int, skip: int = 0) -> Path:
    """Write articles ``skip .. skip+articles`` of a SQuAD JSON file to ``target``."""
    payload = json.loads(source.read_text(encoding="utf-8"))
    payload["data"] = payload["data"][skip : skip + articles]
    target.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return target


_PEOPLE = ["Ada", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun"]
_CITIES = ["Lisbon", "Oslo", "Quito", "Nairobi", "Hanoi", "Perth", "Lima", "Riga", "Accra", "Kyoto"]
_THINGS = ["violins", "bridges", "clocks", "boats", "maps", "bells", "kites", "lamps", "looms", "drums"]


def synthetic_squad(path: Path, *, questions: int, offset: int = 0) -> Path:
    """A SQuAD-1.1 file of simple hand-made facts, for when the real data is absent."""
    data = []
    for i in range(offset, offset + questions):
        person, city = _PEOPLE[i % 10], _CITIES[(i * 3) % 10]
        thing, year = _THINGS[(i * 7) % 10], 1800 + (i * 37) % 200
        context = (
            f"{person} was born in {city} in {year}. Later {person} built {thing} for the people of "
            f"{city}, and the {thing} are still shown in the town museum every summer."
        )
        question, answer = [
            (f"Where was {person} born?", city),
            (f"In which year was {person} born?", str(year)),
            (f"What did {person} build?", thing),
        ][i % 3]
        qa = {
            "id": f"syn-{i}",
            "question": question,
            "answers": [{"text": answer, "answer_start": context.index(answer)}],
        }
        data.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def find_sst2_dir() -> Path | None:
    """GLUE SST-2: ``$REGTUNE_SST2_DIR``, else ``sst2`` beside the TyDi folder, else ../shared/data/sst2."""
    env = os.environ.get("REGTUNE_SST2_DIR")
    candidates = [Path(env)] if env else []
    tydi = find_data_dir()
    if tydi is not None:
        candidates.append(tydi.parent / "sst2")
    candidates.append(Path(__file__).parents[1].parent / "shared/data/sst2")
    return next((c for c in candidates if (c / "train.tsv").is_file()), None)


def skip_or_fail(reason: str) -> NoReturn:
    """A test that cannot run: a failure in CI (``CI`` set), where everything it needs must be there;
    elsewhere a skip whose reason pytest prints (``-ra``)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip")
    pytest.skip(f"{reason}; in CI this fails instead")


def require_module(name: str) -> Any:
    """Import a test dependency of the ``dev`` extra, or :func:`skip_or_fail` if it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        skip_or_fail(f"{name} is not installed ({err}); `pip install -e .[dev]` installs it")


def missing_data(what: str) -> NoReturn:
    """In CI a missing data folder is a failure; elsewhere the test is skipped, saying why."""
    skip_or_fail(f"{what} not found (set {DATA_ENV} or REGTUNE_SST2_DIR; CI must have ../shared/data)")


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    """The real SST-2 folder (train.tsv, dev.tsv); a failure in CI and a skip elsewhere when absent."""
    folder = find_sst2_dir()
    if folder is None:
        missing_data("SST-2 data")
    return folder  # type: ignore[return-value]


@dataclass(frozen=True)
class SstSlice:
    train: Path
    dev: Path


@pytest.fixture(scope="session")
def sst2_slice(tmp_path_factory: pytest.TempPathFactory, sst2_dir: Path) -> SstSlice:
    """The first 40 rows of SST-2 train and 20 of dev (header kept)."""
    folder = tmp_path_factory.mktemp("sst2")
    for name, rows in (("train", 40), ("dev", 20)):
        lines = (sst2_dir / f"{name}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / f"{name}.tsv").write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return SstSlice(train=folder / "train.tsv", dev=folder / "dev.tsv")


@dataclass(frozen=True)
class SquadPair:
    train: Path
    dev: Path
    synthetic: bool


@pytest.fixture(scope="session")
def tiny_squad(tmp_path_factory: pytest.TempPathFactory) -> SquadPair:
    """A small train/dev pair: the first articles of the real TyDi en files, or synthetic facts."""
    folder = tmp_path_factory.mktemp("squad")
    real = find_data_dir()
    if real is not None:
        return SquadPair(
            train=squad_slice(real / "en/train.json", folder / "train.json", articles=TRAIN_ARTICLES),
            dev=squad_slice(real / "en/dev.json", folder / "dev.json", articles=DEV_ARTICLES),
            synthetic=False,
        )
    return SquadPair(
        train=synthetic_squad(folder / "train.json", questions=TRAIN_ARTICLES),
        dev=synthetic_squad(folder / "dev.json", questions=DEV_ARTICLES, offset=1000),
        synthetic=True,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ``BertModel`` (no QA head) plus the bundled tokenizer, saved together offline."""
    import torch
    from transformers import BertConfig, BertModel

    from regtune.core.hub import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("minilm-l6")
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_BERT)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


#: A chat template small enough for the bundled BERT vocabulary (it lower-cases and splits the markers).
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|> {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def save_tiny_lm(folder: Path, *, chat: bool) -> Path:
    """A tiny random ``LlamaForCausalLM`` with the bundled tokenizer ([SEP] as EOS), saved offline."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from regtune.core.hub import load_tokenizer

    tokenizer = load_tokenizer("minilm-l6")
    tokenizer.eos_token = tokenizer.sep_token
    if chat:
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.cls_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a chat template (see :func:`save_tiny_lm`)."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), chat=True)


@pytest.fixture(scope="session")
def make_config(tiny_model_dir: Path, tiny_squad: SquadPair) -> Callable[..., Any]:
    """``make_config(output_dir, **overrides)``: the fast tiny-model TrainConfig."""
    from regtune.training.config import resolve_config

    def make(output_dir: Path, **overrides: Any):
        return resolve_config(
            "default",
            model=str(tiny_model_dir),
            train_file=str(tiny_squad.train),
            dev_file=str(tiny_squad.dev),
            output_dir=str(output_dir),
            **{**FAST_TRAIN, **overrides},
        )

    return make


@dataclass(frozen=True)
class FinishedRun:
    dir: Path
    config: Any  # TrainConfig
    metrics: dict[str, Any]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, make_config: Callable[..., Any]) -> FinishedRun:
    """One uninterrupted tiny training run with the ``FAST_TRAIN`` settings."""
    from regtune.training.trainer import train_model

    run_dir = tmp_path_factory.mktemp("runs") / "base"
    config = make_config(run_dir)
    with _one_thread():
        metrics = train_model(config, progress=False)
    return FinishedRun(dir=run_dir, config=config, metrics=metrics)


class _one_thread:
    """Tiny models gain nothing from intra-op threads; on a busy 2-core box they only contend."""

    def __enter__(self) -> None:
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.previous)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with _one_thread():
        yield


@pytest.fixture
def restore_hf_logging() -> Iterator[None]:
    """Undo what ``cli.main`` does to transformers' global verbosity and progress bars."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
