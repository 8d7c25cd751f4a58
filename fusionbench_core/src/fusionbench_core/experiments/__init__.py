"""Experiments at scale: the result store, sweeps, validation selection, tables, statistics, plots, reports.

- :mod:`.store`: the SQLite result store (one row per run, metrics per split, compact predictions);
- :mod:`.sweep`: ``fb sweep`` specs, cell keys, jobs and the resumable driver that writes the store;
- :mod:`.executors`: where jobs run: serially in process, or as Ray tasks (``--executor ray``);
- :mod:`.reuse`: λ sweeps of task arithmetic and TIES, with the pools and the task vector built once;
- :mod:`.tables`: validation selection and the leaderboard (Markdown, CSV, LaTeX, HTML);
- :mod:`.stats`: the paired bootstrap of ``fb compare``;
- :mod:`.plots` and :mod:`.report`: ``fb plot`` (matplotlib) and ``fb report`` (one HTML page).

Only :mod:`.sweep` (when it runs cells) and :mod:`.plots` import heavy packages, lazily; the rest
is the standard library. See ``docs/experiments.md``.
"""
