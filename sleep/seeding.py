"""N3, deep sleep: knowledge seeding for one night.

1. Probes: for each note, the teacher's questions (and the reverse direction),
   answered by the teacher with the note in context; two per note are held out
   (one of a note with two), to verify that note.
   Earlier nights' probes that today's notes change are answered anew (newest wins).
2. Negatives: questions about nothing the user said, answered "you haven't told me".
3. Anchors: shipped general prompts and earlier nights' probes, answered by the model
   before tonight without notes.
4. Training on the four pools (``lessons``), evaluated every few steps on what chat
   will run: the candidate expert in llama.cpp answers the held-out probes closed-book
   (training stops when it has learned them) and writes fresh on-policy samples.

Everything it builds is kept in a ``NightState``, so a paused night goes on from
its last checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from assistant.backends.protocol import Backend, Lesson
from assistant.experts.peft import PeftAdapter
from assistant.faults import crash_point
from assistant.sleep import lessons, probes, verify
from assistant.sleep.anchors import ANCHOR_PROMPTS
from assistant.sleep.checkpoint import TRAINING, NightState
from assistant.sleep.probes import Probe
from assistant.sleep.recipe import Recipe
from assistant.sleep.teacher import Teacher


@dataclass(frozen=True)
class Hooks:
    """What the runner lends the night: progress lines, the stop check (raises when the
    night's conditions end), the periodic checkpoint, and where each held-out check during
    training is told (step, recall, anchor drift)."""

    progress: Callable[[str], None]
    check_stop: Callable[[], None]
    checkpoint_if_due: Callable[[], None]
    checked: Callable[[int, float, float], None]


def training_is_done(
    recipe: Recipe, step: int, recall: float, drift: float, best_step: int
) -> bool:
    """After a held-out check: the probes are learned, or recall has not improved for
    ``patience`` checks (the best expert is kept), or the anchors are running away."""
    stalled = recipe.patience > 0 and (step - best_step >= recipe.patience * recipe.evaluate_every)
    runaway = drift > recipe.runaway_divergence * recipe.gates.max_anchor_divergence
    return recall >= recipe.stop_recall or stalled or runaway


def check_score(recall: float, drift: float, max_anchor_divergence: float) -> float:
    """How good the expert of a held-out check is: its recall, less 1 when its anchors
    drifted past what verification allows, so the expert kept is one that could pass."""
    return recall if drift <= max_anchor_divergence else recall - 1.0


def judged_notes(night: NightState) -> list[str]:
    """The notes verification judges: those with probes, and those the teacher could write
    none for (never learned, so carried to the next night rather than shredded). A note all of
    whose questions a later correction answered is not among them: the newer note holds it."""
    return list(
        dict.fromkeys([*(p.note for p in [*night.probes, *night.held_out]), *night.unprobed])
    )


def export_expert(backend: Backend, hf_config: dict) -> tuple[PeftAdapter, bytes]:
    """The new expert as a PEFT adapter and as a GGUF LoRA, in memory."""
    from assistant.experts.lora_gguf import gguf_lora

    adapter = backend.export_expert()
    return adapter, gguf_lora(adapter, hf_config)


class KnowledgeSeeding:
    def __init__(
        self,
        teacher: Teacher,
        backend: Backend,
        night: NightState,
        recipe: Recipe,
        hooks: Hooks,
        hf_config: dict,
    ) -> None:
        self.teacher = teacher
        self.backend = backend
        self.night = night
        self.recipe = recipe
        self.hooks = hooks
        self.hf_config = hf_config
        self.end_of_turn = teacher.engine.end_of_turn

    # -- 1. probes ------------------------------------------------------------------
    def write_probes(self, notes: list[str], earlier: list[Probe]) -> None:
        """Probes for each note not done yet, then for the earlier facts today changes."""
        night = self.night
        for i in range(night.notes_done, len(notes)):
            self.hooks.check_stop()
            questions = self.teacher.questions(notes[i], self.recipe.seed + i)
            night.asked += len(questions)
            found = [
                probe
                for question in questions
                if (probe := self.teacher.probe(question, notes[i], notes[i + 1 :]))
            ]
            if not found:
                night.unprobed.append(notes[i])
            crash_point("probes")
            train, held_out = probes.hold_out(found, random.Random(f"{self.recipe.seed}/{i}"))
            night.lessons += self._fact_lessons(train)
            night.probes += train
            night.held_out += held_out
            night.notes_done = i + 1
            self.hooks.checkpoint_if_due()
        for old in earlier:
            if old.question in night.changed:
                continue
            latest = [
                n for n in notes if probes.content_words(old.question) <= probes.content_words(n)
            ]
            new = self.teacher.probe(old.question, latest[-1]) if latest else None
            if new and set(new.values) != set(old.values):
                night.changed.append(old.question)
                night.lessons += self._fact_lessons([new])
                night.probes.append(new)

    def _fact_lessons(self, found: list[Probe]) -> list[Lesson]:
        examples = [
            lessons.Example(
                self.teacher.prompt([p.note], p.question),
                self.teacher.prompt([], p.question),
                [
                    *self.teacher.engine.tokenize(p.answer, special=False, add_bos=False),
                    self.end_of_turn,
                ],
            )
            for p in found
        ]
        return self._ending_at_paragraph(examples)

    def _ending_at_paragraph(self, examples: list[lessons.Example]) -> list[Lesson]:
        scored = lessons.lessons_for(self.backend, examples, self.recipe.top_k)
        return [lessons.ending_here(lesson, self.end_of_turn) for lesson in scored]

    # -- 2 and 3. negatives and anchors --------------------------------------------------
    def negatives_and_anchors(self, notes: list[str], earlier: list[Probe]) -> None:
        night, recipe, teacher = self.night, self.recipe, self.teacher
        rng = random.Random(f"{recipe.seed}/negatives")
        about = [*notes, *(f"{p.question} {p.answer}" for p in earlier)]
        asked = [p.question for p in night.probes]
        others = probes.negative_questions(about, recipe.negatives, rng)
        near = probes.near_misses(asked, about, recipe.near_misses, rng)
        negatives = list(dict.fromkeys([*others, *near]))
        rng.shuffle(negatives)  # the held-out ones are near misses in the same share
        held = max(1, len(negatives) // 4) if len(negatives) > 1 else 0
        night.held_out_negatives = negatives[:held]
        abstain = [
            *teacher.engine.tokenize(probes.ABSTAIN, special=False, add_bos=False),
            self.end_of_turn,
        ]
        night.negative_lessons = [
            lessons.hard_lesson(teacher.prompt([], q), abstain, recipe.top_k)
            for q in negatives[held:]
        ]
        shipped = random.Random(f"{recipe.seed}/anchors").sample(
            ANCHOR_PROMPTS, min(recipe.anchors, len(ANCHOR_PROMPTS))
        )
        questions = [*shipped, *(p.question for p in earlier if p.question not in night.changed)]
        examples = []
        for question in dict.fromkeys(questions):
            self.hooks.check_stop()
            prompt = teacher.prompt([], question)
            reply = teacher.reply(prompt, max_tokens=recipe.anchor_answer_tokens)
            answer = reply.answer(self.end_of_turn)
            if answer:
                examples.append(lessons.Example(prompt, prompt, answer))
        night.anchors = lessons.lessons_for(self.backend, examples, recipe.top_k)
        # KL to a top-k target is not zero even untrained (the mass outside the top k):
        # verification bounds how much training adds to it.
        night.anchor_baseline = self.backend.divergence(night.anchors) if night.anchors else 0.0
        night.stage = TRAINING

    # -- 4. training -----------------------------------------------------------------------
    def train(
        self, deadline: float, on_step: Callable[[int, float, int], None]
    ) -> tuple[int, float | None]:
        night, recipe = self.night, self.recipe
        pools = lessons.Pools(night.lessons, night.samples, night.negative_lessons, night.anchors)

        def evaluate(step: int, last: bool = False) -> bool:
            """Held-out recall of the expert so far (the best one that could pass is kept),
            and fresh on-policy samples for the steps that follow, if any; True to stop:
            learned, no better for ``patience`` checks, or the anchors running away."""
            with self.candidate():
                recall = verify.share(verify.recalled(self.closed_book, night.held_out)) or 0.0
                if not last and step < recipe.max_steps:
                    pools.samples[:] = night.samples = self._samples(step)
            drift = self._anchor_drift()
            self.hooks.checked(step, recall, drift)
            self.hooks.progress(
                f"N3 training: step {step}, held-out recall {recall:.0%}, anchor drift {drift:.3f}"
            )
            score = check_score(recall, drift, recipe.gates.max_anchor_divergence)
            if score > night.best_score:
                night.best_score, night.best_step = score, step
                night.best = self.backend.training_state()
            return training_is_done(recipe, step, recall, drift, night.best_step)

        started = night.step
        steps, loss = lessons.train(
            self.backend,
            pools,
            recipe,
            deadline,
            start_step=started,
            on_step=on_step,
            evaluate=evaluate,
        )
        if steps > started and steps % recipe.evaluate_every:
            evaluate(steps, last=True)  # the last stretch, cut short by the limit or deadline
        if night.best and night.best_step != steps:
            self.backend.restore_training_state(night.best)
            self.hooks.progress(f"N3 training: keeping the expert of step {night.best_step}")
        return steps, loss

    def _samples(self, step: int) -> list[Lesson]:
        """The candidate's own answers to some training probes, to be scored by the teacher."""
        chosen = random.Random(f"{self.recipe.seed}/samples/{step}").sample(
            self.night.probes, min(self.recipe.samples_per_evaluation, len(self.night.probes))
        )
        examples = []
        for i, probe in enumerate(chosen):
            student = self.teacher.prompt([], probe.question)
            reply = self.teacher.reply(
                student, temperature=self.recipe.sample_temperature, seed=step * 1000 + i
            )
            answer = reply.answer(self.end_of_turn)
            if answer:
                examples.append(
                    lessons.Example(
                        self.teacher.prompt([probe.note], probe.question), student, answer
                    )
                )
        return self._ending_at_paragraph(examples)

    def _anchor_drift(self) -> float:
        """How much further the anchors are from the model before tonight than untrained."""
        anchors = self.night.anchors
        return self.backend.divergence(anchors) - self.night.anchor_baseline if anchors else 0.0

    # -- verification -------------------------------------------------------------------------
    def closed_book(self, question: str) -> str:
        return self.teacher.reply(self.teacher.prompt([], question)).text

    @contextmanager
    def candidate(self) -> Iterator[None]:
        """The expert as trained so far, applied in the chat engine (from memory: no file)."""
        _, gguf = export_expert(self.backend, self.hf_config)
        with self.teacher.candidate(gguf):
            yield

    def verify(self, earlier: list[Probe]) -> verify.Checks:
        night = self.night
        values = {v for p in [*night.probes, *night.held_out] for v in p.values}
        retained = [p for p in earlier if p.question not in night.changed]
        divergence = self._anchor_drift()
        with self.candidate():
            return verify.check(
                self.closed_book,
                night.held_out,
                night.held_out_negatives,
                retained,
                values,
                divergence,
                judged_notes(night),
            )
