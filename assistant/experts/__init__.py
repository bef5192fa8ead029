"""Experts: the LoRA adapters nights learn (or the user imports), and everything about one.

``peft`` is an expert's value in memory (a PEFT adapter, with its scaling rule),
``lora_gguf`` writes it as the GGUF LoRA llama.cpp applies, ``vault`` seals its
files at rest under a key of its own, and ``registry`` lists the
experts a model has, in SQLite, and removes them crash-safely. Exporting and
importing them as files for other tools is ``assistant.adapters``.
"""
