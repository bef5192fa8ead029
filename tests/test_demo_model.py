"""The demo model: it trains, `assistant model demo` caches it, llama.cpp reads it as trained."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.demo.corpus import encode_transcript, render_message, transcripts
from assistant.demo.training import MAX_FINAL_COPY_LOSS, PRESETS, train_demo_model
from assistant.errors import ModelError
from assistant.hf_weights import read_config

# Cross-entropy per assistant token after the tiny preset's 100 steps (it starts near ln V).
TINY_LOSS_BOUND = 3.3


def test_tiny_config_trains_and_its_loss_falls(tmp_path):
    report = train_demo_model(PRESETS["tiny"], tmp_path / "tiny")
    assert report.first_loss > 6.0
    assert report.final_loss < TINY_LOSS_BOUND
    assert read_config(tmp_path / "tiny")["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((tmp_path / "tiny" / "training.json").read_text())["steps"] == 100


def test_a_warm_up_that_does_not_learn_to_copy_stops_the_build_before_the_corpus(tmp_path):
    # Two warm-up steps are far too few to learn copying: the copy batches stay near ln V.
    config = replace(PRESETS["tiny"], copy_schedule=((2, 32),), copy_every=2, steps=4)
    steps = []
    with pytest.raises(ModelError, match="the copy warm-up ended at copy loss"):
        train_demo_model(config, tmp_path / "broken", lambda step, *_: steps.append(step))
    assert steps == [1, 2]


def test_a_build_that_cannot_copy_at_the_end_fails_and_keeps_its_log(tmp_path):
    config = replace(
        PRESETS["tiny"], copy_schedule=((2, 32),), copy_formed_loss=99.0, copy_every=2, steps=6
    )
    with pytest.raises(ModelError, match="did not learn to read from its context"):
        train_demo_model(config, tmp_path / "broken")
    log = json.loads((tmp_path / "broken" / "training.json").read_text())
    assert log["final_copy_loss"] > MAX_FINAL_COPY_LOSS


@pytest.mark.slow
def test_model_demo_twice_builds_once_then_reuses_the_cache(home):
    runner = CliRunner()
    first = runner.invoke(cli, ["model", "demo", "--preset", "tiny"])
    assert first.exit_code == 0, first.output
    assert "Training the tiny demo model" in first.stderr
    builds = list((home / "cache" / "demo").iterdir())
    assert len(builds) == 1
    trained_at = (builds[0] / "training.json").stat().st_mtime_ns

    second = runner.invoke(cli, ["model", "demo", "--preset", "tiny"])
    assert second.exit_code == 0, second.output
    assert "Training" not in second.stderr
    assert (builds[0] / "training.json").stat().st_mtime_ns == trained_at
    listing = runner.invoke(cli, ["model", "list", "--json"])
    (demo,) = json.loads(listing.stdout)
    assert demo["name"] == "demo" and demo["active"]


@pytest.mark.slow
def test_training_and_llama_cpp_see_the_same_tokens(tiny_demo):
    from transformers import AutoTokenizer

    from assistant.recall import benchmark_runtime

    tokenizer = AutoTokenizer.from_pretrained(tiny_demo)
    with benchmark_runtime(tiny_demo, "tiny") as runtime:
        engine = runtime.load_engine()
        try:
            for messages in itertools.islice(transcripts(99), 5):
                ids, _ = encode_transcript(
                    lambda text: tokenizer.encode(text, add_special_tokens=False), messages
                )
                assert engine.tokenize("".join(render_message(m) for m in messages)) == ids
                assert engine.render(messages[:-1]) == (
                    "".join(render_message(m) for m in messages[:-1]) + "<|im_start|>assistant\n"
                )
        finally:
            engine.close()


def test_copy_warm_up_then_the_corpus_with_copy_batches_mixed_in(tmp_path):
    import random

    from assistant.bpe import train_tokenizer
    from assistant.demo.training import copy_batch, corpus_schedule, warm_up_schedule

    config = replace(
        PRESETS["tiny"], copy_schedule=((2, 32), (3, 64)), copy_every=2, steps=4, batch_tokens=256
    )
    sample = ["".join(map(render_message, t)) for t in itertools.islice(transcripts(0), 200)]
    tokenizer = train_tokenizer(sample, tmp_path, config.vocab_size)
    copy_rng = random.Random(0)
    warm_up = list(warm_up_schedule(config, len(tokenizer), copy_rng))
    schedule = warm_up + list(corpus_schedule(tokenizer, config, copy_rng))
    assert [len(step.batch[0][0]) for step in warm_up] == [32, 32, 64]
    rates = [step.learning_rate for step in warm_up]
    assert rates[0] < rates[2] <= config.copy_learning_rate  # gentle warm-up
    assert [step.phase for step in schedule] == [*["warm-up"] * 3, *["corpus", "copy"] * 2]
    start = 1  # <|im_start|>: transcripts begin with it, copy rows with a random token
    assert all((step.batch[0][0][0] == start) == (step.phase == "corpus") for step in schedule)

    ids, labels = copy_batch(random.Random(0), 1000, 64, 128)
    assert len(ids) == 2 and all(len(row) == 64 for row in ids)
    row, target = ids[0], labels[0]
    half = row.index(start)  # separates a sequence from its copy
    assert row[half + 1 : 2 * half + 1] == row[:half] and row[2 * half + 1] == 2
    assert target[: half + 1] == [-100] * (half + 1)  # the random half is not scored...
    assert target[half + 1 : 2 * half + 2] == row[half + 1 : 2 * half + 2]  # ...its copy is

    # Most sequences come from a small alphabet, so tokens recur within them.
    ids, _ = copy_batch(random.Random(1), 4096, 128, 128 * 60)
    firsts = [row[: row.index(start)] for row in ids]
    assert sum(len(set(seq)) < len(seq) for seq in firsts) >= len(firsts) // 3
