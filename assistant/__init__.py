"""An on-device personal assistant that learns while it sleeps.

The top-level package holds what the assistant does while awake: paths and
config, the encrypted memory store, the model registry and GGUF conversion,
and the chat engine. Sleep, training backends, kernels and the terminal UI
live in the subpackages ``assistant.sleep``, ``assistant.backends``,
``assistant.kernels`` and ``assistant.tui``.
"""

import os.path

__version__ = "0.1.0"

# In a source checkout those four subpackages are the root folders sleep/, backends/, kernels/
# and tui/ (pyproject's package-dir). They have no __init__.py, so that none of them hides an
# installed package of the same name when the checkout's root is on sys.path (`python -m
# pytest`, `python -c`): Hugging Face's `kernels`, which transformers imports, is one. Folders
# without __init__.py are found where the package looks for its subpackages, and setuptools'
# editable finder maps only folders with one, so in a checkout the package also looks in the
# root. Installed from a wheel they are folders inside assistant/ and this does nothing.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "kernels")) and os.path.isfile(
    os.path.join(_ROOT, "pyproject.toml")
):
    __path__.append(_ROOT)
