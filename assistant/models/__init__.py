"""Base models: the registry, and every format a model is read from or written to.

``registry`` keeps which models are installed and which one chats; ``convert``
writes Hugging Face weights as GGUF for llama.cpp (``hf_weights`` reads them);
``lora_gguf`` writes a PEFT expert as a GGUF LoRA; ``bpe`` trains the byte-level
BPE tokenizers of models built on this machine.
"""
