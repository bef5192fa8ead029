"""How a night learns, in one place: what the user's config sets and what the recipe fixes.

The night reads every knob from one ``Recipe``, built once from the config and the night's
seed (``Recipe.of``). The fields with defaults are the recipe's own values, chosen by
measurement on the starter (``bench/night.py``); the config does not expose them.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.config import Config
from assistant.sleep.verify import Thresholds


@dataclass(frozen=True)
class Recipe:
    seed: int  # probes, batches and samples are drawn from it: a resumed night goes on alike
    # From the config (``sleep_*``).
    max_steps: int  # the learning rate decays linearly to zero over them
    learning_rate: float
    rank: int
    evaluate_every: int  # steps between held-out checks (and fresh on-policy samples)
    stop_recall: float  # held-out recall at which training stops
    patience: int  # held-out checks without a better recall before training stops; 0: none
    max_answer_tokens: int
    questions_per_note: int
    anchors: int  # shipped anchor prompts per night (a seeded sample), plus earlier probes
    negatives: int  # never-told questions per night, a quarter held out
    gates: Thresholds  # what verification requires of the expert
    # The recipe's own.
    top_k: int = 32  # the teacher's distribution is kept to its k likeliest tokens
    facts_per_batch: int = 8
    samples_per_batch: int = 2
    # As many never-told questions as fact lessons: with 3 per batch half the held-out
    # never-told questions named a learned value; with 8 none did (seeds 0 and 1).
    negatives_per_batch: int = 8
    # Never-told questions as close as can be to what was told, on top of the others: what
    # was asked of a told relative, pet or event, asked of an untold one, and what was never
    # said of a told relative. In place of half the others (seed 0), fewer first-person
    # never-told questions were refused (abstention 0.9 -> 0.7).
    near_misses: int = 32
    anchors_per_batch: int = 2
    samples_per_evaluation: int = 8  # on-policy samples drawn at each held-out check
    sample_temperature: float = 0.7
    anchor_answer_tokens: int = 24  # an anchor's answer is kept to its start
    # Training stops early when the anchors drift this many times the verification limit:
    # more steps would not bring them back in time.
    runaway_divergence: float = 3.0

    @classmethod
    def of(cls, config: Config, seed: int) -> Recipe:
        return cls(
            seed=seed,
            max_steps=config.sleep_steps,
            learning_rate=config.sleep_learning_rate,
            rank=config.sleep_rank,
            evaluate_every=config.sleep_evaluate_every,
            stop_recall=config.sleep_stop_recall,
            patience=config.sleep_patience,
            max_answer_tokens=config.sleep_max_answer_tokens,
            questions_per_note=config.sleep_questions_per_note,
            anchors=config.sleep_anchors,
            negatives=config.sleep_negatives,
            gates=Thresholds.of(config),
        )
