"""The offline demo model: a synthetic personal-assistant corpus and a small Llama trained on it.

``facts`` holds what a user can tell (slots, phrasings, value pools, and the
fixed train/held-out split), ``corpus`` turns that into chat transcripts in the
product's own prompt layout, ``training`` builds the tokenizer and the model.
"""
