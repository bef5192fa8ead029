"""Short nights of the starter for the tests of the night's machinery, and their homes.

The machinery (what is kept, committed, shredded, resumed and left behind) does not
depend on how much a night learns, so these nights are short and their gates open; the
gates themselves are tested on a real night in tests/test_sleep_quality.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from assistant.cli import cli

CANARIES = ("My goldfish is called Zorblax-4417.", "I live in Quixotic Harbour 9921.")
SHORT_NIGHT = {
    "sleep_steps": 6,
    "sleep_evaluate_every": 6,
    "sleep_anchors": 4,
    "sleep_negatives": 4,
    "sleep_max_answer_tokens": 32,
    "sleep_questions_per_note": 4,
}
GATES_OPEN = {
    **SHORT_NIGHT,
    "sleep_min_recall": 0.0,
    "sleep_min_retention": 0.0,
    "sleep_max_leak": 1.0,
    "sleep_max_anchor_divergence": 1e9,
}


def configure(home: Path, settings: dict) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.json").write_text(json.dumps(settings))


def tell(*messages: str) -> None:
    for message in messages:
        result = CliRunner().invoke(cli, ["chat", "--once", message])
        assert result.exit_code == 0, result.output


def sleep_now(*args: str) -> dict:
    """`sleep --now --json` in this process; its report."""
    result = CliRunner().invoke(cli, ["sleep", "--now", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "data" / "assistant.db")


def count(home: Path, table: str) -> int:
    with db(home) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def files_mentioning(root: Path, needles: tuple[str, ...]) -> list[str]:
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and any(n.encode() in path.read_bytes() for n in needles)
    ]


def copy_home(source: Path, target: Path) -> None:
    """A copy of a home: its memory copied, its base models' files hard-linked. Those are
    public weights nothing writes in place (a changed model is copied anew and renamed over
    the old copy), and the starter's training copy is 0.5 GB."""
    models = source / "data" / "models"

    def copy(src: str, dst: str) -> None:
        if models in Path(src).parents:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy)


def link_training_copy(home: Path, training_copy: Path) -> None:
    """Give ``home`` the starter's training copy made once for the session: each home would
    otherwise dequantize its own, identical, at its first night (8 s)."""
    from assistant.models.starter import STARTER_NAME

    target = home / "data" / "models" / STARTER_NAME / "hf"
    target.parent.mkdir(parents=True)
    shutil.copytree(training_copy, target, copy_function=os.link)
