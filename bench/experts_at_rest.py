"""What sealing experts costs: loading sealed experts against plaintext ones, same run.

    python bench/experts_at_rest.py [--experts 4] [--repeats 5] [--workdir DIR]

On bench/chat.py's random Qwen2.5-0.5B-shaped model with random rank-16 experts on
every linear layer (about 35 MB each as GGUF, the same as PEFT), two starts are timed:
- chat start: llama.cpp applying the experts, from plaintext GGUF files against from
  sealed files (hash check, AES-GCM decryption, a private memory file);
- training start: the PEFT adapters read into memory, from plaintext folders against
  from sealed files (what the torch backend then loads is the same either way).
The configurations alternate so machine noise hits them alike. Prints JSON: seconds,
ms per MB, and sealed/plaintext ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from chat import build_experts, build_model


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from assistant.engine import ChatEngine, ExpertSpec
    from assistant.experts import vault
    from assistant.experts.peft import PeftAdapter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/assistant-bench"))
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    base_gguf, config = build_model(args.workdir)
    ggufs = build_experts(args.workdir, config, args.experts)
    plain_specs = [ExpertSpec(path) for path in ggufs]
    sealed = []
    for path in ggufs:
        key = vault.new_key()
        directory = args.workdir / f"sealed-{path.stem}"
        hashes = vault.seal_expert(
            directory, key, PeftAdapter.read(path.with_suffix("")), path.read_bytes()
        )
        sealed.append(vault.SealedExpert(directory, key, hashes, path.stem))
    sealed_specs = [ExpertSpec(s.path(vault.GGUF_FILE), read=s.gguf) for s in sealed]
    megabytes = sum(p.stat().st_size for p in ggufs) / 1e6
    peft_megabytes = (
        sum((p.with_suffix("") / "adapter_model.safetensors").stat().st_size for p in ggufs) / 1e6
    )

    engine = ChatEngine(base_gguf, n_ctx=256)
    times: dict[str, list[float]] = {
        k: [] for k in ("chat_plain", "chat_sealed", "train_plain", "train_sealed")
    }
    for _ in range(args.repeats):
        for name, specs in (("chat_plain", plain_specs), ("chat_sealed", sealed_specs)):
            times[name].append(_timed(lambda specs=specs: engine.set_experts(specs)))
            engine.set_experts([])
        times["train_plain"].append(
            _timed(lambda: [PeftAdapter.read(p.with_suffix("")) for p in ggufs])
        )
        times["train_sealed"].append(_timed(lambda: [s.adapter() for s in sealed]))
    engine.close()

    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        json.dumps(
            {
                "experts": args.experts,
                "gguf_mb": round(megabytes, 1),
                "peft_mb": round(peft_megabytes, 1),
                "seconds": {k: round(v, 4) for k, v in median.items()},
                "chat_start_ms_per_mb": {
                    "plain": round(1e3 * median["chat_plain"] / megabytes, 3),
                    "sealed": round(1e3 * median["chat_sealed"] / megabytes, 3),
                },
                "training_start_ms_per_mb": {
                    "plain": round(1e3 * median["train_plain"] / peft_megabytes, 3),
                    "sealed": round(1e3 * median["train_sealed"] / peft_megabytes, 3),
                },
                "ratio_sealed_to_plain": {
                    "chat_start": round(median["chat_sealed"] / median["chat_plain"], 3),
                    "training_start": round(median["train_sealed"] / median["train_plain"], 3),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
