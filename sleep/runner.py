"""The sleep runner: sequences N1 → N2 → N3 → verify → wake-up, crash-safe.

Each stage is a module: ``transition`` (N1), ``triage`` (N2), ``seeding`` (N3),
``verify`` and ``wake``. Nothing is deleted before the new expert is committed
and verified. Every stage is recorded in the ``sleeps`` table before the work
that depends on it (see ``state``), so a killed run is either started over or
resumed from its checkpoint (no durable effect yet) or finished (the expert was
verified) by the next run. Plaintext memories exist only in this process's RAM.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from assistant.faults import crash_point
from assistant.runtime import Runtime
from assistant.sleep import state, wake
from assistant.sleep.checkpoint import Checkpoints, NightState
from assistant.sleep.learning import Learning
from assistant.sleep.options import SleepInterrupted, SleepOptions
from assistant.sleep.report import (
    INTERRUPTED,
    KEPT,
    NOTHING_NEW,
    NOTHING_TO_DO,
    SleepReport,
)
from assistant.sleep.transition import begin_night
from assistant.store import lock
from assistant.store.sealed import sleep_label

# Share of the budget for everything before verification; the rest verifies and wakes up.
LEARNING_SHARE = 0.9


Progress = Callable[[str], None]


class SleepRunner:
    def __init__(
        self,
        runtime: Runtime,
        options: SleepOptions | None = None,
        progress: Progress = print,
    ) -> None:
        self.runtime = runtime
        self.options = options or SleepOptions()
        self.progress = progress
        self.log = state.SleepLog(runtime.database, runtime.memory)
        self.checkpoints = Checkpoints(
            runtime.paths.checkpoints_dir, runtime.database, runtime.memory
        )
        self.experts_dir = runtime.paths.experts_dir

    # -- the whole night ---------------------------------------------------------
    def run(self) -> SleepReport:
        """One sleep (or the completion or resumption of an interrupted one). Raises
        StoreBusyError if another sleep (or a reset, an import...) holds the writer lock."""
        self.experts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.runtime.exclusive(lock.SLEEP):
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
            report.model = report.model or night.model  # paused by a version without it
            self.log.advance(sleep_id, state.LEARNING, outcome=None, finished_at=None)
            self.progress(f"resuming sleep {sleep_id}: {night.stage}, step {night.step}")
        else:
            basis = self.basis()  # before N1: without a model or a backend nothing changes
            report = SleepReport(0)
            with self.stage(report, "N1 transition"):
                sleep_id, epochs = begin_night(self.log, store)
            report.sleep_id = sleep_id
            night = NightState(*basis)
            report.model = night.model
        turns = store.unconsolidated(epochs)
        report.epochs, report.turns = epochs, len(turns)
        if not turns:
            report.outcome = NOTHING_TO_DO
            return self._finish_without_commit(report)
        learning = Learning(
            self.runtime,
            self.options,
            self.checkpoints,
            self.stage,
            self.progress,
            report,
            night,
            deadline,
        )
        try:
            kept = learning.learn(turns)
        except SleepInterrupted as stop:
            report.outcome, report.reason = INTERRUPTED, str(stop)
            report.resumable = learning.checkpointed
            return self._finish_without_commit(
                report, state.PAUSED if learning.checkpointed else state.DONE
            )
        if report.outcome == KEPT:
            self.checkpoints.discard(sleep_id)
            return self._finish_without_commit(report)
        sealed_report = self.log.seal_report(report)
        if report.outcome == NOTHING_NEW:
            self.log.advance(sleep_id, state.SHREDDING, report=sealed_report)
        else:
            crash_point("files-written")
            self.log.advance(
                sleep_id,
                state.VERIFIED,
                report=sealed_report,
                probes=wake.seal_probes(self.runtime, sleep_label("probes", sleep_id), kept),
                expert_key=wake.seal_expert_key(self.log, sleep_id, learning.expert),
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
            report=self.log.seal_report(report),
        )
        return report

    def _wake(self, sleep_id: int) -> SleepReport:
        """Commit and shred. The checkpoint goes only now: a night killed before it was
        recorded VERIFIED resumes from it."""
        began = time.monotonic()
        self.checkpoints.discard(sleep_id)
        expert_dir = wake.expert_dir(self.experts_dir, sleep_id)
        report = wake.wake(self.runtime, self.log, sleep_id, expert_dir)
        report.stage_seconds["wake-up"] = round(time.monotonic() - began, 3)
        return report

    # -- crash recovery ----------------------------------------------------------------
    def _recover(self) -> tuple[SleepReport | None, state.SleepRow | None]:
        """Finish a sleep killed after verification; pick a paused one, or one killed while
        learning, to resume from its checkpoint; close any other. Returns (the finished
        one's report, the one to resume)."""
        finished = paused = None
        for row in self.log.unfinished():
            if row.stage in state.AFTER_VERIFICATION:
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
        """The night's checkpoint, if it has a whole one made on today's model and experts.
        Paused under the other backend, it keeps its probes and restarts its training."""
        *basis, backend = self.basis()
        night = self.checkpoints.load(row.id)
        if night is None or list(night.basis()) != basis:
            why = "no checkpoint" if night is None else "the model or its experts changed"
            self.progress(f"sleep {row.id} cannot resume ({why}); starting over")
            self._abandon(row.id)
            return None
        if night.backend_name != backend:
            self.progress(
                f"sleep {row.id} was paused under {night.backend_name} and this run trains"
                f" with {backend}: its probes are kept, its training starts over"
            )
            night = night.with_training_restarted(backend)
        return row, night

    def basis(self) -> tuple[str, list[int], int, str]:
        """What tonight builds on: the model, the experts learned before, the seed, and the
        training backend (raises, saying what to install, if there is none, or that the
        device asked for is not one of that backend's)."""
        from assistant.backends import choice

        model = self.runtime.require_model()
        experts = [e.id for e in self.runtime.experts.active(model.name)]
        backend = choice.resolve(self.options.backend or self.runtime.config.sleep_backend)
        choice.check_device(backend, self.options.device)
        return model.name, experts, self.options.seed, backend

    def _remove_orphans(self) -> None:
        """Delete expert directories no registry row points to (from a run killed mid-way)."""
        referenced = {
            Path(r[0]).name for r in self.runtime.database.execute("SELECT directory FROM experts")
        }
        for entry in self.experts_dir.iterdir():
            if entry.name not in referenced:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
