"""The studies the tools run (quickstart, method comparison, label-free study, W statistics):
resumable training runs, their datasets, and the comparison's plan and reports.

Not part of the installed ``sard`` package: a study finds its configs in the checkout
(``configs/`` next to this ``tools/`` folder). Tool scripts import it as ``studies`` (Python
puts a script's own folder, ``tools/``, first on ``sys.path``); tests put ``tools/`` on the
path in ``tests/conftest.py``.
"""
