"""Wake-up: commit the verified expert, then shred the consolidated epochs.

The expert's registry row, its kept probes and the stage change are one
transaction; the epochs are deleted only after it, each in one transaction that
first carries the turns of the notes the expert did not learn into the open
epoch (the report names them), so they wait for the next night. A night that found nothing to
learn commits nothing and shreds all the same. Each expert keeps the held-out
probes it answered right (question, answer, value; never the note), sealed: the
next nights check they are still answered (retention) and keep them as anchors.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from assistant.experts import vault
from assistant.experts.peft import PeftAdapter
from assistant.experts.registry import LEGACY_PEFT_DIR, ExpertRecord, remove_plaintext
from assistant.experts.vault import SealedExpert
from assistant.faults import crash_point
from assistant.runtime import Runtime
from assistant.sleep import probes, state
from assistant.sleep.probes import Probe
from assistant.sleep.report import CONSOLIDATED, SleepReport
from assistant.store.db import now


def expert_dir(experts_dir: Path, sleep_id: int) -> Path:
    """Where a night's verified expert lives."""
    return experts_dir / f"night-{sleep_id}"


def staging_dir(experts_dir: Path, sleep_id: int) -> Path:
    """Where a night seals its verified expert before renaming it to ``expert_dir``."""
    return experts_dir / f".staging-{sleep_id}"


def seal_expert_key(log: state.SleepLog, sleep_id: int, expert: SealedExpert) -> bytes:
    """The saved expert's key and file hashes, sealed, kept in the night's row until commit."""
    data = json.dumps({"key": expert.key.hex(), "hashes": expert.hashes}).encode()
    return log.seal("expert_key", sleep_id, data)


def _night_expert(log: state.SleepLog, sleep_id: int, expert_dir: Path) -> SealedExpert:
    sealed = log.sealed_expert_key(sleep_id)
    label = f"the expert of night {sleep_id}"
    if sealed is None:  # verified by a version that saved experts in plaintext: sealed now
        key = vault.new_key()
        adapter = PeftAdapter.read(expert_dir / LEGACY_PEFT_DIR)
        gguf = (expert_dir / vault.GGUF_FILE).read_bytes()
        hashes = vault.seal_expert(expert_dir, key, adapter, gguf)
        return SealedExpert(expert_dir, key, hashes, label)
    data = json.loads(log.unseal("expert_key", sleep_id, sealed))
    return SealedExpert(expert_dir, bytes.fromhex(data["key"]), data["hashes"], label)


def seal_probes(runtime: Runtime, label: str, kept: list[Probe]) -> bytes:
    """Probes sealed for storage, their notes left out."""
    data = json.dumps([replace(p, note="").to_json() for p in kept]).encode()
    return runtime.memory.seal(label, data)


def earlier_probes(runtime: Runtime, learned: list[ExpertRecord]) -> list[Probe]:
    """The kept probes of the experts learned before tonight."""
    kept = []
    for expert in learned:
        data = runtime.experts.probes(runtime.memory, expert)
        if data is not None:
            kept += [_probe(item) for item in json.loads(data)]
    return kept


def _probe(item: list) -> Probe:
    if len(item) == 2:  # an expert from before values were kept: [question, answer]
        question, answer = item
        values = tuple(probes.content_words(answer) - probes.content_words(question))
        return Probe(question, "", answer, values)
    return Probe.from_json(item)


def wake(runtime: Runtime, log: state.SleepLog, sleep_id: int, expert_dir: Path) -> SleepReport:
    """Commit the verified expert (if the night made one and it is not committed yet), shred
    the consolidated epochs, and finish the night's row."""
    store = runtime.memory
    row = log.get(sleep_id)
    report = log.report(row)  # sealed before the night reached a stage that wakes
    report.outcome = report.outcome or CONSOLIDATED
    if row.stage == state.VERIFIED:
        _commit(runtime, log, row, report, expert_dir)
    remove_plaintext(expert_dir)  # what a night verified by an older version left
    log.advance(sleep_id, state.SHREDDING)
    for epoch_id in row.epochs:
        store.delete_epoch(epoch_id, keep=report.carried)
        crash_point("shredding")
    log.advance(
        sleep_id,
        state.DONE,
        outcome=report.outcome,
        report=log.seal_report(report),
        probes=None,
    )
    return report


def _commit(
    runtime: Runtime,
    log: state.SleepLog,
    row: state.SleepRow,
    report: SleepReport,
    expert_dir: Path,
) -> None:
    """The expert's registry row, its kept probes and the stage change: one transaction."""
    store, database = runtime.memory, runtime.database
    model = runtime.models.get(report.model) if report.model else runtime.require_model()
    kept = log.unseal("probes", row.id, row.probes)
    expert = _night_expert(log, row.id, expert_dir)
    with database.transaction():
        expert_id = runtime.experts.add(
            store,
            model.name,
            expert_dir,
            expert.key,
            expert.hashes,
            expert.config()["r"],
            sleep_id=row.id,
            created_at=now(),
            probes=kept,
        )
        report.expert_id = expert_id
        log.advance(
            row.id,
            state.COMMITTED,
            expert_id=expert_id,
            expert_key=None,
            report=log.seal_report(report),
        )
