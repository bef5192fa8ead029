"""The sleep runner: sequences N1 → N2 → N3 → verify → wake-up, crash-safe (DESIGN.md §3, §7).

Each stage is a module: ``transition`` (N1), ``triage`` (N2), ``seeding`` (N3),
``verify`` and ``wake``. Nothing is deleted before the new expert is committed
and verified. Every stage is recorded in the ``sleeps`` table before the work
that depends on it (see ``state``), so a killed run is either started over or
resumed from its checkpoint (no durable effect yet) or finished (the expert was
verified) by the next run. Plaintext memories exist only in this process's RAM.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError
from assistant.faults import crash_point
from assistant.runtime import Runtime
from assistant.sleep import state, triage, verify, wake
from assistant.sleep.checkpoint import PROBES, Checkpoints, NightState
from assistant.sleep.probes import Probe
from assistant.sleep.report import (
    CONSOLIDATED,
    INTERRUPTED,
    KEPT,
    NOTHING_NEW,
    NOTHING_TO_DO,
    SleepReport,
)
from assistant.sleep.seeding import Hooks, KnowledgeSeeding, SeedingSettings, export_expert
from assistant.sleep.teacher import Teacher
from assistant.sleep.transition import begin_night

# Room left after the teacher's note for a probe question and its answer.
QUESTION_ROOM_TOKENS = 64
TOP_K = 32  # the teacher's distribution is kept to its k likeliest tokens
SAMPLES_PER_EVALUATION = 8  # on-policy samples drawn at each held-out check
# Share of the budget for everything before verification; the rest verifies and wakes up.
LEARNING_SHARE = 0.9


class SleepInterrupted(Exception):
    """Raised inside the night when its conditions end; ``str()`` is the reason."""


SIGNAL_REASONS = {
    signal.SIGINT: "you pressed Ctrl-C",
    signal.SIGTERM: "the system asked it to stop",
}


@contextmanager
def stop_on_signals(notice: Callable[[str], None]) -> Iterator[Callable[[], str | None]]:
    """Ctrl-C or SIGTERM (a scheduler or logout stopping the job) pauses the night at its
    next check instead of killing it mid-step; a second Ctrl-C stops at once. Yields a
    ``should_stop``. Outside the main thread, where Python cannot take signals, it never
    asks to stop."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handle(signum: int, frame: object) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(SIGNAL_REASONS[signum])
        notice("pausing at the next step; the next sleep resumes from there")

    previous = {signum: signal.signal(signum, handle) for signum in SIGNAL_REASONS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(frozen=True)
class SleepOptions:
    budget_minutes: float | None = None  # None: the config's
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    # Asked between units of work; a reason (str) stops the night, None goes on.
    should_stop: Callable[[], str | None] = lambda: None


Progress = Callable[[str], None]


class SleepRunner:
    def __init__(
        self, runtime: Runtime, options: SleepOptions = SleepOptions(), progress: Progress = print
    ) -> None:
        self.runtime = runtime
        self.options = options
        self.progress = progress
        self.log = state.SleepLog(runtime.database)
        self.checkpoints = Checkpoints(
            runtime.paths.checkpoints_dir, runtime.database, runtime.memory
        )
        self.experts_dir = runtime.paths.experts_dir

    # -- the whole night ---------------------------------------------------------
    def run(self) -> SleepReport:
        """One sleep (or the completion or resumption of an interrupted one). Raises
        SleepBusyError if another sleep holds the lock."""
        self.experts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with state.SleepLock(self.runtime.paths.sleep_lock):
            self.runtime.experts.finish_removals()
            finished, paused = self._recover()
            self._remove_orphans()
            self.checkpoints.remove_unreferenced()
            if finished is not None:
                return finished
            return self._sleep(self._resumable(paused) if paused else None)

    def _sleep(self, resumed: tuple[state.SleepRow, NightState] | None) -> SleepReport:
        store, config = self.runtime.memory, self.runtime.config
        budget = self.options.budget_minutes
        budget = config.sleep_budget_minutes if budget is None else budget
        deadline = time.monotonic() + budget * 60 * LEARNING_SHARE
        if resumed:
            row, night = resumed
            sleep_id, epochs = row.id, row.epochs
            report = SleepReport.from_json(night.report)
            self.log.advance(sleep_id, state.LEARNING, outcome=None, finished_at=None)
            self.progress(f"resuming sleep {sleep_id}: {night.stage}, step {night.step}")
        else:
            report = SleepReport(0)
            with self.stage(report, "N1 transition"):
                sleep_id, epochs = begin_night(self.log, store)
            report.sleep_id = sleep_id
            night = NightState(*self.basis())
        turns = store.unconsolidated(epochs)
        report.epochs, report.turns = epochs, len(turns)
        if not turns:
            report.outcome = NOTHING_TO_DO
            return self._finish_without_commit(report)
        learning = _Learning(self, report, night, deadline)
        try:
            kept = learning.learn(turns)
        except SleepInterrupted as stop:
            report.outcome, report.reason = INTERRUPTED, str(stop)
            report.resumable = learning.checkpointed
            return self._finish_without_commit(
                report, state.PAUSED if learning.checkpointed else state.DONE
            )
        self.checkpoints.discard(sleep_id)
        if report.outcome == KEPT:
            return self._finish_without_commit(report)
        sealed_report = store.seal(f"sleep-report:{sleep_id}", report.to_json())
        if report.outcome == NOTHING_NEW:
            self.log.advance(sleep_id, state.SHREDDING, report=sealed_report)
        else:
            crash_point("files-written")
            self.log.advance(
                sleep_id,
                state.VERIFIED,
                report=sealed_report,
                probes=wake.seal_probes(self.runtime, f"sleep-probes:{sleep_id}", kept),
            )
            crash_point("verified")
        return self._wake(sleep_id)

    @contextmanager
    def stage(self, report: SleepReport, name: str) -> Iterator[None]:
        self.progress(name)
        began = time.monotonic()
        try:
            yield
        finally:
            report.stage_seconds[name] = round(
                report.stage_seconds.get(name, 0.0) + time.monotonic() - began, 3
            )

    def _finish_without_commit(self, report: SleepReport, stage: str = state.DONE) -> SleepReport:
        self.log.advance(
            report.sleep_id,
            stage,
            outcome=report.outcome,
            report=self.runtime.memory.seal(f"sleep-report:{report.sleep_id}", report.to_json()),
        )
        return report

    def _wake(self, sleep_id: int) -> SleepReport:
        began = time.monotonic()
        report = wake.wake(self.runtime, self.log, sleep_id, self.expert_dir_of(sleep_id))
        report.stage_seconds["wake-up"] = round(time.monotonic() - began, 3)
        return report

    # -- crash recovery ----------------------------------------------------------------
    def expert_dir_of(self, sleep_id: int) -> Path:
        return self.experts_dir / f"night-{sleep_id}"

    def staging_dir_of(self, sleep_id: int) -> Path:
        return self.experts_dir / f".staging-{sleep_id}"

    def _recover(self) -> tuple[SleepReport | None, state.SleepRow | None]:
        """Finish a sleep killed after verification; pick a paused one, or one killed while
        learning, to resume from its checkpoint; close any other. Returns (the finished
        one's report, the one to resume)."""
        finished = paused = None
        for row in self.log.unfinished():
            if row.stage in (state.VERIFIED, state.COMMITTED, state.SHREDDING):
                self.progress(f"finishing the sleep interrupted at {row.stage!r}")
                finished = self._wake(row.id)
            elif row.stage in (state.PAUSED, state.LEARNING) and paused is None:
                paused = row  # killed while learning: resumable if it saved a checkpoint
            else:
                self._abandon(row.id)
        return finished, paused

    def _abandon(self, sleep_id: int) -> None:
        """Close a night that cannot go on; its epochs are untouched, so nothing is lost."""
        self.checkpoints.discard(sleep_id)
        self.log.advance(sleep_id, state.DONE, outcome=state.ABANDONED)

    def _resumable(self, row: state.SleepRow) -> tuple[state.SleepRow, NightState] | None:
        """The night's checkpoint, if it has a whole one made on today's model and experts."""
        night = self.checkpoints.load(row.id)
        if night is None or night.basis() != self.basis():
            why = "no checkpoint" if night is None else "the model or its experts changed"
            self.progress(f"sleep {row.id} cannot resume ({why}); starting over")
            self._abandon(row.id)
            return None
        return row, night

    def basis(self) -> tuple[str, list[int], int]:
        """What tonight builds on: the model, the experts learned before, the seed."""
        model = self.runtime.require_model()
        experts = [e.id for e in self.runtime.experts.active(model.name)]
        return model.name, experts, self.options.seed

    def _remove_orphans(self) -> None:
        """Delete expert directories no registry row points to (from a run killed mid-way)."""
        referenced = {
            Path(r[0]).parent.name
            for r in self.runtime.database.execute("SELECT peft_dir FROM experts")
        }
        for entry in self.experts_dir.iterdir():
            if entry.name not in referenced:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


class _Learning:
    """N2, N3 and verification for one night, in RAM until the verified expert is written.
    Holds what those stages share: the teacher, the backend, the night's state."""

    def __init__(
        self, runner: SleepRunner, report: SleepReport, night: NightState, deadline: float
    ) -> None:
        self.runner = runner
        self.runtime = runner.runtime
        self.config = runner.runtime.config
        self.report = report
        self.night = night
        self.deadline = deadline
        self.checkpointed = False
        self.saved_at = time.monotonic()
        self.backend = None

    def learn(self, turns: list) -> list[Probe]:
        """Fills the report; returns the probes the verified expert keeps (its files are then
        at their final path), or [] with the report's outcome saying why there is none.
        Raises SleepInterrupted after saving a checkpoint when the night's conditions end."""
        from assistant.engine import ChatEngine
        from assistant.models.hf_weights import read_config

        stage, report, night, config = self.runner.stage, self.report, self.night, self.config
        model = self.runtime.require_model()
        learned = self.runtime.experts.active(model.name)
        with stage(report, "N2 light"):
            _check_integrity(self.runtime, learned)
            engine = ChatEngine(
                model.gguf_path, self.runtime.expert_specs(), config.n_ctx, n_threads=config.threads
            )
            teacher = Teacher(engine, config.sleep_max_answer_tokens)
            room = engine.n_ctx - QUESTION_ROOM_TOKENS - config.sleep_max_answer_tokens
            notes = triage.notes_that_fit(
                triage.day_notes(turns), lambda note: len(teacher.prompt([note], "")) <= room
            )
            earlier = wake.earlier_probes(self.runtime, learned)
        if not notes:
            engine.close()
            report.outcome = NOTHING_NEW
            return []
        scratch = self.runner.staging_dir_of(report.sleep_id)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        try:
            with stage(report, "N3 load"):
                hf_dir = self.runtime.training_dir(model)
                self.backend = _load_backend(
                    hf_dir, learned, self.runner.options, config.sleep_rank
                )
                report.backend = f"{self.backend.name}/{self.backend.device}"
                if night.backend:
                    self.backend.restore_training_state(night.backend)
            seeding = KnowledgeSeeding(
                teacher,
                self.backend,
                night,
                self._settings(),
                Hooks(self.runner.progress, self._check_stop, self._checkpoint_if_due),
                read_config(hf_dir),
                scratch,
            )
            return self._seed_and_verify(seeding, notes, earlier, scratch)
        finally:
            engine.close()
            shutil.rmtree(scratch, ignore_errors=True)  # gone already if the expert was saved

    def _seed_and_verify(
        self, seeding: KnowledgeSeeding, notes: list[str], earlier: list[Probe], scratch: Path
    ) -> list[Probe]:
        stage, report, night = self.runner.stage, self.report, self.night
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
        verdict = verify.judge(checks, self._thresholds())
        if not verdict.passed:
            report.outcome, report.reason = KEPT, verdict.reason
            return []
        with stage(report, "save"):
            export_expert(self.backend, seeding.hf_config, scratch)
            os.replace(scratch, self.runner.expert_dir_of(report.sleep_id))
        report.outcome = CONSOLIDATED
        report.learned = [p.question for p in checks.passed_probes][:10]
        return checks.passed_probes

    def _settings(self) -> SeedingSettings:
        config = self.config
        return SeedingSettings(
            top_k=TOP_K,
            anchors=config.sleep_anchors,
            negatives=config.sleep_negatives,
            max_steps=config.sleep_steps,
            learning_rate=config.sleep_learning_rate,
            evaluate_every=config.sleep_evaluate_every,
            samples_per_evaluation=SAMPLES_PER_EVALUATION,
            stop_recall=config.sleep_stop_recall,
            max_anchor_divergence=config.sleep_max_anchor_divergence,
            seed=self.runner.options.seed,
        )

    def _thresholds(self) -> verify.Thresholds:
        config = self.config
        return verify.Thresholds(
            config.sleep_min_recall,
            config.sleep_min_retention,
            config.sleep_max_leak,
            config.sleep_max_anchor_divergence,
        )

    def _check_stop(self) -> None:
        reason = self.runner.options.should_stop()
        if reason:
            raise SleepInterrupted(reason)
        if time.monotonic() >= self.deadline:
            raise SleepInterrupted("its time budget ran out")

    def _on_step(self, step: int, loss: float, tokens: int) -> None:
        self.night.step = step
        self.night.train_tokens += tokens
        self._checkpoint_if_due()
        crash_point("training")
        if step % 10 == 0:
            self.runner.progress(f"N3 training: step {step}, loss {loss:.4f}")
        reason = self.runner.options.should_stop()
        if reason:
            raise SleepInterrupted(reason)

    def _save_checkpoint(self) -> None:
        night = self.night
        if self.backend is not None:
            night.backend = self.backend.training_state()
        night.report = self.report.to_json()
        self.runner.checkpoints.save(self.report.sleep_id, night)
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
        if (
            not (expert.peft_dir / "adapter_config.json").is_file()
            or not expert.gguf_path.is_file()
        ):
            raise AssistantError(
                f"The files of expert {expert.id} are missing or incomplete; nothing was changed.",
                hint="Restore the data directory from a backup.",
            )


def _load_backend(hf_dir: Path, learned, options: SleepOptions, rank: int):
    from assistant.backends.protocol import LearnedExpert, NewExpert

    if options.backend not in ("auto", "torch"):
        raise AssistantError(
            f"Unknown training backend {options.backend!r}.", hint="Use auto or torch."
        )
    from assistant.backends.torch_backend import TorchBackend

    return TorchBackend(
        hf_dir,
        [LearnedExpert(e.peft_dir, e.scale) for e in learned],
        NewExpert(rank=rank, alpha=2.0 * rank, seed=options.seed),
        device=options.device,
    )
