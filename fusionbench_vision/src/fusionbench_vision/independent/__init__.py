"""Suites of independently initialised models (no shared pretrained model): the alignment setting.

- :mod:`.models`: the wide MLP and the small ResNet-style CNN with BatchNorm, each with its
  permutation spec (plain data, read by the alignment plugin) and built from any state's widths;
- :mod:`.build`: training from N random inits on MNIST-5k (Git Re-Basin) or on its two halves of
  labels (ZipIt!), cached and resumable under ``$FUSIONBENCH_CACHE/suites/independent/``;
- :mod:`.pool`: the model pools and task pools ``independent-mlp``, ``independent-cnn``,
  ``independent-mlp-halves``, ``independent-cnn-halves``;
- :mod:`.plugin`: their registration (entry point ``independent``).
"""
