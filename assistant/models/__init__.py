"""Base models: the registry, and every format a model is read from or written to.

``registry`` keeps which models are installed and which one chats; ``starter``
finds the packaged starter model; ``gguf_import`` checks a GGUF file (through
``gguf_header``, a fast header reader) and dequantizes it for training;
``ollama`` resolves ``ollama:NAME`` to its file; ``convert`` writes Hugging Face
weights as GGUF for llama.cpp (``hf_weights`` reads them); ``bpe`` trains the
byte-level BPE tokenizers of models built on this machine.
"""
