"""The mini-compositional suite: (emoji category, artist) pairs, held in and held out (Tam et al. 2024).

See ``docs/compositional.md``. :mod:`.data` builds the pairs from the emoji-datasource packages,
:mod:`.build` the experts and the multitask model, :mod:`.pool` the pools, :mod:`.report` the
``fb compositional`` command.
"""
