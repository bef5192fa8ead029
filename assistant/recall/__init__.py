"""The recall benchmark and the synthetic personal facts it tells and asks about.

``facts`` holds what a user can tell (slots, phrasings, value pools, and the
fixed train/held-out split), ``corpus`` turns facts into statements, questions
and chat transcripts, ``benchmark`` runs the simulated days and nights.
"""
