"""N2, N3 and verification for one night: from the day's turns to a verified expert on disk.

The runner hands it a sealed night (its turns, its state so far) and gets back
the probes the verified expert keeps, or the reason there is none in the
report. Everything it builds stays in RAM (and in the night's encrypted
checkpoint) until the verified expert is renamed into place.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from assistant.backends.protocol import Backend
from assistant.config import Config
from assistant.errors import AssistantError
from assistant.experts import vault
from assistant.experts.peft import PeftAdapter
from assistant.faults import crash_point
from assistant.runtime import Runtime
from assistant.sleep import triage, verify, wake
from assistant.sleep.checkpoint import PROBES, Checkpoints, NightState
from assistant.sleep.options import SleepInterrupted, SleepOptions
from assistant.sleep.probes import Probe
from assistant.sleep.recipe import Recipe
from assistant.sleep.report import CONSOLIDATED, KEPT, NOTHING_NEW, SleepReport
from assistant.sleep.seeding import Hooks, KnowledgeSeeding, export_expert
from assistant.sleep.teacher import Teacher
from assistant.store.db import fsync_directory

# Room left after the teacher's note for a probe question and its answer.
QUESTION_ROOM_TOKENS = 64

Stage = Callable[[SleepReport, str], AbstractContextManager[None]]


class Learning:
    """N2, N3 and verification for one night, in RAM until the verified expert is written.
    Holds what those stages share: the teacher, the backend, the night's state."""

    def __init__(
        self,
        runtime: Runtime,
        options: SleepOptions,
        checkpoints: Checkpoints,
        stage: Stage,
        progress: Callable[[str], None],
        report: SleepReport,
        night: NightState,
        deadline: float,
    ) -> None:
        self.runtime = runtime
        self.options = options
        self.checkpoints = checkpoints
        self.stage = stage
        self.progress = progress
        self.config = runtime.config
        self.report = report
        self.night = night
        self.deadline = deadline
        self.scratch = wake.staging_dir(runtime.paths.experts_dir, report.sleep_id)
        self.expert_dir = wake.expert_dir(runtime.paths.experts_dir, report.sleep_id)
        # Each sleep (a retry of a night that was kept, too) draws its probes, batches and
        # samples afresh; a resumed night has its sleep id, so it goes on as it began.
        self.recipe = Recipe.of(runtime.config, options.seed + report.sleep_id)
        self.checkpointed = False
        self.saved_at = time.monotonic()
        self.backend: Backend | None = None
        self.expert: vault.SealedExpert | None = None  # once saved

    def learn(self, turns: list) -> list[Probe]:
        """Fills the report; returns the probes the verified expert keeps (its files are then
        at their final path), or [] with the report's outcome saying why there is none.
        Raises SleepInterrupted after saving a checkpoint when the night's conditions end."""
        from assistant.engine import ChatEngine
        from assistant.models.hf_weights import read_config

        stage, report, night, config = self.stage, self.report, self.night, self.config
        recipe = self.recipe
        model = self.runtime.models.get(report.model)
        experts = self.runtime.experts
        learned = experts.active(model.name)
        with stage(report, "N2 light"):
            _check_integrity(self.runtime, learned)
            specs = [experts.chat_spec(self.runtime.memory, e) for e in learned]
            engine = ChatEngine(model.gguf_path, specs, config.n_ctx, n_threads=config.threads)
            teacher = Teacher(engine, recipe.max_answer_tokens, recipe.questions_per_note)
            room = engine.n_ctx - QUESTION_ROOM_TOKENS - recipe.max_answer_tokens
            sources = triage.notes_that_fit(
                triage.day_notes(turns), lambda note: len(teacher.prompt([note], "")) <= room
            )
            earlier = wake.earlier_probes(self.runtime, learned)
        if not sources:
            engine.close()
            report.outcome = NOTHING_NEW
            return []
        try:
            with stage(report, "N3 load"):
                self.progress(f"N3 load: training with {night.backend_name}")
                hf_dir = self.runtime.training_dir(model)
                sealed = [(experts.open(self.runtime.memory, e), e.scale) for e in learned]
                self.backend = _load_backend(
                    hf_dir, sealed, night.backend_name, self.options, config, recipe
                )
                report.backend = f"{self.backend.name}/{self.backend.device}"
                if night.backend:
                    self.backend.restore_training_state(night.backend)
            seeding = KnowledgeSeeding(
                teacher,
                self.backend,
                night,
                recipe,
                Hooks(self.progress, self._check_stop, self._checkpoint_if_due, self._checked),
                read_config(hf_dir),
            )
            tries = {turn.id: turn.tries for turn in turns}
            return self._seed_and_verify(seeding, sources, tries, earlier)
        finally:
            engine.close()

    def _seed_and_verify(
        self,
        seeding: KnowledgeSeeding,
        sources: triage.Notes,
        tries: dict[int, int],
        earlier: list[Probe],
    ) -> list[Probe]:
        stage, report, night = self.stage, self.report, self.night
        notes = list(sources)
        try:
            if night.stage == PROBES:
                with stage(report, "N3 probes"):
                    seeding.write_probes(notes, earlier)
                if not night.asked:
                    report.outcome = NOTHING_NEW
                    return []
                if not night.probes and not night.held_out:
                    report.outcome = KEPT
                    report.reason = (
                        "the model could answer no question about your messages from them,"
                        " so there is nothing it could learn and check."
                    )
                    return []
                with stage(report, "N3 anchors"):
                    seeding.negatives_and_anchors(notes, earlier)
            report.notes, report.changed = len(notes), len(night.changed)
            report.probes, report.held_out = len(night.probes), len(night.held_out)
            report.negatives = len(night.negative_lessons) + len(night.held_out_negatives)
            report.anchors = len(night.anchors)
            with stage(report, "N3 training"):
                steps, loss = seeding.train(self.deadline, self._on_step)
        except SleepInterrupted:
            self._save_checkpoint()
            raise
        report.train_steps, report.train_tokens = steps, night.train_tokens
        report.final_loss = None if loss is None else round(loss, 5)
        with stage(report, "verify"):
            checks = seeding.verify(earlier)
        report.recall = _rounded(checks.recall)
        report.leak = _rounded(checks.leak)
        report.retention = _rounded(checks.retention)
        report.anchor_divergence = round(checks.anchor_divergence, 5)
        report.note_recall = [[sum(hits), len(hits)] for hits in checks.by_note.values()]
        verdict = verify.judge(checks, self.recipe.gates)
        if not verdict.passed:
            report.outcome, report.reason = KEPT, verdict.reason
            return []
        with stage(report, "save"):
            self._save(*export_expert(self.backend, seeding.hf_config))
        self._carry_what_was_not_learned(checks, set(verdict.learned), sources, tries)
        report.outcome = CONSOLIDATED
        kept = [p for p in checks.passed_probes if p.note in verdict.learned]
        report.learned = [p.question for p in kept][:10]
        return kept

    def _carry_what_was_not_learned(
        self,
        checks: verify.Checks,
        learned: set[str],
        sources: triage.Notes,
        tries: dict[int, int],
    ) -> None:
        """Name in the report the turns of the notes the expert did not learn: wake-up
        carries them into the open epoch, for the next night, instead of shredding them."""
        report = self.report
        waiting = [note for note in checks.by_note if note not in learned]
        report.notes_learned, report.notes_waiting = len(learned), len(waiting)
        report.carried = sorted({turn for note in waiting for turn in sources[note]})
        # Carried tonight once more: those carried ``sleep_max_tries`` nights are reported.
        last_try = self.config.sleep_max_tries - 1
        report.notes_overdue = sum(max(tries[t] for t in sources[n]) >= last_try for n in waiting)

    def _check_stop(self) -> None:
        reason = self.options.should_stop()
        if reason:
            raise SleepInterrupted(reason)
        if time.monotonic() >= self.deadline:
            raise SleepInterrupted("its time budget ran out")

    def _checked(self, step: int, recall: float, drift: float) -> None:
        self.report.checks.append(
            {"step": step, "recall": round(recall, 4), "anchor_drift": round(drift, 5)}
        )

    def _on_step(self, step: int, loss: float, tokens: int) -> None:
        self.night.step = step
        self.night.train_tokens += tokens
        self._checkpoint_if_due()
        crash_point("training")
        if step % 10 == 0:
            self.progress(f"N3 training: step {step}, loss {loss:.4f}")
        reason = self.options.should_stop()
        if reason:
            raise SleepInterrupted(reason)

    def _save(self, adapter: PeftAdapter, gguf: bytes) -> None:
        """Seal the verified expert under a new key into its directory, durably. A save
        killed before the night is recorded VERIFIED left a directory no row points to: it
        is replaced."""
        key = vault.new_key()
        shutil.rmtree(self.scratch, ignore_errors=True)
        hashes = vault.seal_expert(self.scratch, key, adapter, gguf)
        shutil.rmtree(self.expert_dir, ignore_errors=True)
        os.replace(self.scratch, self.expert_dir)
        fsync_directory(self.expert_dir.parent)
        self.expert = vault.SealedExpert(self.expert_dir, key, hashes, "tonight's expert")

    def _save_checkpoint(self) -> None:
        night = self.night
        if self.backend is not None:
            night.backend = self.backend.training_state()
        night.report = self.report.to_json()
        self.checkpoints.save(self.report.sleep_id, night)
        self.checkpointed, self.saved_at = True, time.monotonic()

    def _checkpoint_if_due(self) -> None:
        """Every ``sleep_checkpoint_minutes``, so a night killed outright (out of memory, a
        crash) loses at most that much work."""
        if time.monotonic() - self.saved_at >= self.config.sleep_checkpoint_minutes * 60:
            self._save_checkpoint()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _check_integrity(runtime: Runtime, learned) -> None:
    (result,) = runtime.database.execute("PRAGMA quick_check").fetchone()
    if result != "ok":
        raise AssistantError(
            f"The memory database failed its integrity check ({result}); nothing was changed.",
            hint="Restore the data directory from a backup.",
        )
    for expert in learned:
        if not all((expert.directory / (name + vault.SUFFIX)).is_file() for name in expert.hashes):
            raise AssistantError(
                f"The files of expert {expert.id} are missing or incomplete; nothing was changed.",
                hint="Restore the data directory from a backup.",
            )


def _load_backend(
    hf_dir: Path,
    learned: list[tuple[vault.SealedExpert, float]],
    name: str,
    options: SleepOptions,
    config: Config,
    recipe: Recipe,
):
    """Backend ``name``: the one the runner resolved ``--backend`` to and the night records,
    so a resumed night trains with the backend whose training state it restores."""
    from assistant.backends import choice
    from assistant.backends.protocol import LearnedExpert, NewExpert

    return choice.load_backend(
        name,
        hf_dir,
        [LearnedExpert(e.adapter(), scale) for e, scale in learned],
        NewExpert(rank=recipe.rank, alpha=2.0 * recipe.rank, seed=recipe.seed),
        device=options.device,
        kernels=config.sleep_kernels,
    )
