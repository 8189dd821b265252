"""Generative QA: the prompt and its long-context rule, answer-only labels, batched decoding, scoring,
and a tiny causal LM with registers trained, saved, reloaded and scored end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from conftest import TINY_CHAT_TEMPLATE, save_tiny_lm
from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import get_register_config, get_register_module, load_model
from regtune.tasks import get_task
from regtune.tasks.generative_qa import evaluation as gen_eval
from regtune.tasks.generative_qa.evaluation import GenerativeQASettings, first_line, generate_answers
from regtune.tasks.generative_qa.features import IGNORE, CausalCollator, train_rows
from regtune.tasks.generative_qa.prompt import INSTRUCTION, build_prompt, prompt_text, token_ids
from regtune.tasks.qa.data import Answer, QAExample

CONTEXT = " ".join(f"word{i} is here." for i in range(60))  # ~300 tokens of distinct words


@pytest.fixture(scope="module")
def tokenizer(tiny_lm_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_lm_dir)


@pytest.fixture(scope="module")
def plain_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama-plain"), chat=False)


def _example(qid: str, answer: str, context: str = CONTEXT, question: str = "where is it?") -> QAExample:
    start = context.index(answer)
    return QAExample(id=qid, question=question, context=context, answers=(Answer(answer, start),))


def test_prompt_uses_the_chat_template_or_the_plain_cue(tokenizer, plain_lm_dir: Path) -> None:
    chat = prompt_text(tokenizer, "q?", "ctx")
    assert chat.startswith("<|user|> " + INSTRUCTION) and chat.endswith("<|assistant|> ")
    plain = prompt_text(AutoTokenizer.from_pretrained(plain_lm_dir), "q?", "ctx")
    assert plain == f"{INSTRUCTION}\n\nPassage: ctx\n\nQuestion: q?\n\nAnswer:"
    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE


def test_short_prompts_are_kept_whole(tokenizer) -> None:
    prompt = build_prompt(tokenizer, "where?", "a short passage.", budget=200)
    assert not prompt.truncated and prompt.context_chars == len("a short passage.")
    assert prompt.input_ids == token_ids(tokenizer, prompt_text(tokenizer, "where?", "a short passage."))


@pytest.mark.parametrize("budget", [40, 64, 100])
def test_long_contexts_lose_their_end_never_the_question(tokenizer, budget: int) -> None:
    prompt = build_prompt(tokenizer, "what is the unusual question?", CONTEXT, budget=budget)
    assert prompt.truncated and len(prompt.input_ids) <= budget
    text = tokenizer.decode(prompt.input_ids)
    assert "what is the unusual question?" in text  # the question survives, after the passage
    assert 0 < prompt.context_chars < len(CONTEXT)
    # The kept part is the passage's start, cut at a token boundary: the rebuilt prompt is the same.
    rebuilt = token_ids(
        tokenizer, prompt_text(tokenizer, "what is the unusual question?", CONTEXT[: prompt.context_chars])
    )
    assert rebuilt == prompt.input_ids
    # One more token of context would not have fit.
    longer = build_prompt(tokenizer, "what is the unusual question?", CONTEXT, budget=budget + 8)
    assert longer.context_chars > prompt.context_chars


def test_a_question_too_long_for_the_budget_is_an_error(tokenizer) -> None:
    with pytest.raises(RegtuneError, match=r"without its passage takes .* tokens"):
        build_prompt(tokenizer, "why " * 50, CONTEXT, budget=30)


def test_train_rows_put_the_loss_on_the_answer_and_eos_only(tokenizer) -> None:
    examples = [_example("a", "word1 is here"), _example("b", "word55 is here")]
    columns, counts = train_rows(examples, tokenizer, max_length=96)
    # "word55" lies beyond what 96 tokens keep: left out and counted, never trained on a lost answer.
    assert counts == {"truncated": 2, "answer_cut": 1}
    assert len(columns["input_ids"]) == 1
    ids, labels = columns["input_ids"][0], columns["labels"][0]
    assert len(ids) == len(labels) == columns["length"][0] <= 96
    target = [t for t in labels if t != IGNORE]
    assert tokenizer.decode(target) == "word1 is here [SEP]"  # the answer, then EOS
    assert labels[: len(ids) - len(target)] == [IGNORE] * (len(ids) - len(target))
    assert ids[-len(target) :] == target


def test_collator_pads_right_with_ignored_labels(tokenizer) -> None:
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = CausalCollator(tokenizer)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tokenizer.pad_token_id, tokenizer.pad_token_id]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_answer_only_logits_give_the_full_loss(tiny_lm_dir: Path, tokenizer) -> None:
    model = _with_registers(tiny_lm_dir, 3)
    examples = [_example("a", "word1 is here"), _example("b", "word22 is here"), _example("c", "word3 is")]
    columns, _ = train_rows(examples, tokenizer, max_length=400)
    rows = [{k: columns[k][i] for k in ("input_ids", "labels")} for i in range(3)]
    full = CausalCollator(tokenizer, answer_logits_only=False)(rows)
    out = model(**full)
    logits, labels = out.logits[:, :-1], full["labels"][:, 1:]  # next-token prediction, all positions
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    n_answer = sum(len(token_ids(tokenizer, e.answers[0].text + "[SEP]")) for e in examples)
    assert (labels != IGNORE).sum() == n_answer  # the answers and their EOS, nothing of the prompts
    lean = CausalCollator(tokenizer)(rows)
    assert (
        lean["logits_to_keep"].shape
        == lean["shift_labels"].shape
        == (3, (lean["shift_labels"] != IGNORE).sum(1).max())
    )
    lean_out = model(**lean)
    assert lean_out.logits.shape[:2] == lean["logits_to_keep"].shape  # (B, K, V): K answer positions only
    assert torch.allclose(lean_out.loss, out.loss, atol=1e-6)
    lean_out.loss.backward()
    assert get_register_module(model).tokens.grad.abs().sum() > 0


def _with_registers(folder: Path, tau: int):
    from transformers import AutoModelForCausalLM

    from regtune.core.registers import add_registers

    torch.manual_seed(0)
    return add_registers(AutoModelForCausalLM.from_pretrained(folder), tau).eval()


def test_batched_generation_matches_one_at_a_time(tiny_lm_dir: Path, tokenizer) -> None:
    model = _with_registers(tiny_lm_dir, 4)
    contexts = [CONTEXT[:60], CONTEXT[:500], CONTEXT, CONTEXT[:20]]  # different lengths: left padding
    examples = [_example(str(i), "word0 is here", c) for i, c in enumerate(contexts)]
    settings = GenerativeQASettings(max_length=128, max_new_tokens=6, precision="fp32")
    together, prompts = generate_answers(model, tokenizer, examples, settings, batch_size=4, progress=False)
    alone, _ = generate_answers(model, tokenizer, examples, settings, batch_size=1, progress=False)
    assert together == alone
    assert [p.truncated for p in prompts] == [False, True, True, False]
    assert all(len(p.input_ids) <= 128 - 6 for p in prompts)


def test_first_line_keeps_the_answer_only() -> None:
    assert first_line("\n  Paris \nThe capital is Paris.") == "Paris"
    assert first_line("") == ""


def test_scores_are_official_squad_against_every_reference(tiny_lm_dir: Path, tokenizer, monkeypatch) -> None:
    examples = [
        QAExample("q1", "?", "the cat sat", (Answer("cat", 4), Answer("the cat", 0))),
        QAExample("q2", "?", "a dog ran", (Answer("dog", 2),)),
    ]
    generated = ["The cat", "a red dog"]  # EM via the second reference; F1 2/3 (article "a" dropped)
    prompts = [build_prompt(tokenizer, e.question, e.context, budget=100) for e in examples]
    monkeypatch.setattr(gen_eval, "generate_answers", lambda *a, **k: (generated, prompts))
    result = gen_eval.evaluate_generative_qa(
        None, tokenizer, examples, GenerativeQASettings(), progress=False
    )
    assert result.per_example == {
        "q1": {"exact_match": 1.0, "f1": 1.0},
        "q2": {"exact_match": 0.0, "f1": 2 / 3},
    }
    assert result.metrics["exact_match"] == 50.0 and result.metrics["num_truncated_prompts"] == 0
    assert result.predictions == {"q1": "The cat", "q2": "a red dog"}


def test_settings_refuse_a_cap_beyond_the_length() -> None:
    with pytest.raises(ConfigError, match="max_new_tokens must be in"):
        GenerativeQASettings(max_length=64, max_new_tokens=64)


def test_train_save_load_and_score_end_to_end(tiny_lm_dir: Path, tiny_squad, tmp_path: Path) -> None:
    from regtune.training.config import resolve_config
    from regtune.training.trainer import train_model

    config = resolve_config(
        "default", task="generative-qa", model=str(tiny_lm_dir), train_file=str(tiny_squad.train),
        dev_file=str(tiny_squad.dev), output_dir=str(tmp_path / "run"), num_registers=4, register_lr=1e-2,
        max_steps=4, batch_size=4, max_length=128, max_new_tokens=8, lr=1e-3,
    )  # fmt: skip
    before = _with_registers(tiny_lm_dir, 0)
    metrics = train_model(config, progress=False)
    assert metrics["task"] == "generative-qa" and metrics["train_steps"] == 4
    assert metrics["num_questions"] == len(json.loads((tmp_path / "run/per_question.json").read_text()))
    assert {"exact_match", "f1", "num_truncated_prompts", "eval_seconds"} <= metrics.keys()
    assert metrics["num_train_prompts"] <= metrics["num_train_questions"]
    model = load_model(tmp_path / "run/model").eval()
    assert get_register_config(model).num_registers == 4
    moved = (model.model.embed_tokens.weight - before.model.embed_tokens.weight).abs().max()
    assert moved > 0  # the backbone trained too
    # Scoring the saved model again gives the same answers as the run's own evaluation.
    task = get_task("generative-qa")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run/model")
    data = task.read_for_model(str(tiny_squad.dev), model)
    again = task.evaluate(model, tokenizer, data, progress=False)
    assert again.predictions == json.loads((tmp_path / "run/predictions.json").read_text())


def test_generative_qa_refuses_an_encoder(tiny_model_dir: Path, tiny_squad, tmp_path: Path) -> None:
    from regtune.training.config import resolve_config
    from regtune.training.trainer import train_model

    config = resolve_config(
        "default", task="generative-qa", model=str(tiny_model_dir), train_file=str(tiny_squad.train),
        dev_file=str(tiny_squad.dev), output_dir=str(tmp_path / "run"), max_steps=1, max_length=128,
    )  # fmt: skip
    with pytest.raises(RegtuneError, match="generative QA needs a causal LM"):
        train_model(config, progress=False)


def test_sweep_and_report_for_generative_qa(tiny_lm_dir: Path, tiny_squad, tmp_path: Path) -> None:
    """A τ ∈ {0, 2} × 2-seed sweep of a causal LM: per-question EM/F1 files and the paired report."""
    from regtune.cli import main as cli

    out = tmp_path / "sweep"
    argv = [
        "sweep", "--task", "generative-qa", "--model", str(tiny_lm_dir), "--registers", "0,2",
        "--seeds", "1,2", "--train", str(tiny_squad.train), "--dev", str(tiny_squad.dev),
        "--output-dir", str(out), "--max-steps", "2", "--batch-size", "4", "--max-length", "128",
        "--max-new-tokens", "4", "--precision", "fp32", "--no-progress",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads((out / "sweep.json").read_text())["sweep"]["options"]["task"] == "generative-qa"
    header, *rows = (out / "results.csv").read_text().splitlines()
    assert header.startswith("run_id,dev,language,exact_match,f1,num_questions,") and len(rows) == 4
    assert cli.main(["report", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["metrics"] == ["f1", "exact_match"]
    tau2 = next(c for c in summary["cells"] if c["axes"]["num_registers"] == 2)
    assert tau2["metrics"]["f1"]["n_seeds"] == 2
    delta = tau2["vs_tau0"]["f1"]
    assert delta["ci_low"] <= delta["delta"] <= delta["ci_high"]
    page = (out / "report" / "index.html").read_text()
    assert "EM against the number of registers" in page and "dev questions" in page


# --- explanations and analysis for decoders --------------------------------------------------------------


def test_explain_inputs_are_the_prompt_with_its_passage_marked(tiny_lm_dir: Path, tokenizer) -> None:
    from regtune.tasks.generative_qa.explain import build_explain_inputs

    examples = [_example("a", "word3 is here", CONTEXT[:200]), _example("b", "word59 is here")]
    items = build_explain_inputs(examples, tokenizer, max_length=128, max_new_tokens=8)
    for example, item in zip(examples, items, strict=True):
        prompt = build_prompt(tokenizer, example.question, example.context, budget=120)
        assert list(item.input_ids) == prompt.input_ids and item.kinds[0] == "cls"
        context = [i for i, k in enumerate(item.kinds) if k == "context"]
        assert context == list(range(context[0], context[-1] + 1))  # one contiguous passage block
        first, last = item.offsets[context[0]], item.offsets[context[-1]]
        assert first[0] == 0 and last[1] == prompt.context_chars  # offsets are into the passage
        assert "question" in item.kinds[context[-1] :]  # the question comes after the passage
    # "word3" is inside the kept passage, "word59" was cut off with the passage's end.
    assert (
        tokenizer.decode(
            [items[0].input_ids[i] for i in range(items[0].gold_span[0], items[0].gold_span[1] + 1)]
        )
        == "word3 is here"
    )
    assert items[1].gold_span is None


@pytest.fixture(scope="module")
def gen_pair(tiny_lm_dir: Path, tiny_squad, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from regtune.training.config import resolve_config
    from regtune.training.trainer import train_model

    root = tmp_path_factory.mktemp("gen-pair")
    for tau in (0, 2):
        config = resolve_config(
            "default", task="generative-qa", model=str(tiny_lm_dir), train_file=str(tiny_squad.train),
            dev_file=str(tiny_squad.dev), output_dir=str(root / f"tau{tau}"), num_registers=tau,
            max_steps=2, batch_size=4, max_length=128, max_new_tokens=4, lr=1e-3,
        )  # fmt: skip
        train_model(config, progress=False)
    return root / "tau0/model", root / "tau2/model"


def test_analyze_a_decoder_pair_reports_sinks_massive_activations_and_ablation(
    gen_pair: tuple[Path, Path], tiny_squad, tmp_path: Path
) -> None:
    from regtune.cli import main as cli

    base, regs = gen_pair
    argv = ["analyze", "--model", str(base), "--compare", str(regs), "--dev", str(tiny_squad.dev),
            "--num-examples", "4", "--output-dir", str(tmp_path / "z"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    for label, tau in (("tau0", 0), ("tau2", 2)):
        analysis = json.loads((tmp_path / "z" / label / "analysis.json").read_text())
        layers = analysis["massive_activations"]["layers"]
        assert len(layers) == 3  # embedding output + 2 decoder layers
        assert all(entry["top"][0]["value"] >= entry["median_magnitude"] > 0 for entry in layers)
        mass = analysis["attention"]["mass"]
        assert len(mass["cls"]) == 2 and all(0 <= m <= 1 for m in mass["cls"])  # attention to the first token
        assert len(mass["register"]) == 2 and (max(mass["register"]) > 0) == (tau > 0)
    ablation = json.loads((tmp_path / "z" / "tau2" / "ablation.json").read_text())
    assert ablation["single"] == []  # generation is costly: all registers at once only
    assert [row["mode"] for row in ablation["all"]] == ["zero", "mean", "mask"]
    assert not (tmp_path / "z" / "tau0" / "ablation.json").exists()
    page = (tmp_path / "z" / "index.html").read_text()
    assert "massive activations" in page and "massive on register" in page


def test_explain_refuses_lrp_on_a_decoder_in_one_line(
    gen_pair: tuple[Path, Path], tiny_squad, tmp_path: Path, capsys
) -> None:
    from regtune.cli import main as cli

    argv = [
        "explain",
        "--model",
        str(gen_pair[1]),
        "--dev",
        str(tiny_squad.dev),
        "--output-dir",
        str(tmp_path),
    ]
    assert cli.main(argv) == 2  # the default methods include LRP
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LRP is not available for causal LMs" in err[0] and "AttnLRP" in err[0]


def test_explain_a_decoder_pair_with_ig_and_attention_gradient(
    gen_pair: tuple[Path, Path], tiny_squad, tmp_path: Path
) -> None:
    from regtune.cli import main as cli
    from regtune.explain.methods import IntegratedGradients
    from regtune.tasks.generative_qa.explain import token_log_probability

    base, regs = gen_pair
    argv = ["explain", "--model", str(base), "--compare", str(regs), "--dev", str(tiny_squad.dev),
            "--method", "ig,attn-grad", "--num-examples", "3", "--n-steps", "16", "--output-dir",
            str(tmp_path / "e"), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary and (tmp_path / "e" / "compare.html").exists()
    # IG explains log p(first generated token) at the prompt's last position: its completeness holds.
    model = load_model(regs).eval()
    task = get_task("generative-qa")
    tokenizer = AutoTokenizer.from_pretrained(regs)
    item = task.explain_inputs(
        task.read_for_model(str(tiny_squad.dev), model).examples[:1], tokenizer, model
    )[0]
    attribution = IntegratedGradients(model, n_steps=64).attribute(item)
    assert attribution.span == (len(item) - 1, len(item) - 1) and attribution.text.shape == (len(item),)
    with torch.no_grad():
        expected = token_log_probability(model(**item.batch()), attribution.span, attribution.label)
    assert abs(attribution.output - float(expected[0])) < 1e-5
    assert attribution.convergence_delta < 0.05 and not attribution.registers.any()
