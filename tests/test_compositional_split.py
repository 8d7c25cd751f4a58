"""mini-compositional's grid and splits: held-in/held-out disjoint and covering, emoji splits disjoint, shots per class.

Needs the emoji-datasource packages (scripts/install-offline-data.sh); skipped without them. No torch.
"""

from __future__ import annotations

from collections import Counter

import pytest

from fusionbench_vision.compositional import data as cd

needs_emoji = pytest.mark.skipif(bool(cd.missing_sources()), reason="emoji-datasource packages not installed")


def test_held_in_and_held_out_are_disjoint_and_cover_the_grid():
    held_in, held_out = cd.held_in(), cd.held_out()
    assert not set(held_in) & set(held_out)
    assert sorted(held_in + held_out) == sorted(cd.pairs())
    assert len(cd.pairs()) == len(cd.CATEGORIES) * len(cd.DOMAINS) == 16
    # DomainNet's pattern: every category held in exactly once, the domains sharing the categories evenly.
    assert sorted(cd.category_of(p) for p in held_in) == sorted(c for c, _ in cd.CATEGORIES)
    assert Counter(cd.domain_of(p) for p in held_in) == {d.name: len(cd.CATEGORIES) // len(cd.DOMAINS)
                                                         for d in cd.DOMAINS}
    assert held_in[:4] == [f"{c}-twemoji" for c, _ in cd.CATEGORIES[:4]]
    assert held_in[4:] == [f"{c}-noto" for c, _ in cd.CATEGORIES[4:]]


def test_subset_orders_are_fixed_permutations():
    held_in = cd.held_in()
    assert cd.subset_order(held_in, 0) == held_in
    for p in (1, 2, 3):
        order = cd.subset_order(held_in, p)
        assert sorted(order) == sorted(held_in) and order == cd.subset_order(held_in, p)
    assert cd.subset_order(held_in, 1) != cd.subset_order(held_in, 2)


@needs_emoji
def test_emoji_splits_are_disjoint_and_shared_by_both_artists():
    for category, _ in cd.CATEGORIES:
        split = cd._category_split(category)
        files = {s: {f for f, _ in split[s]} for s in cd.SPLITS}
        for a in cd.SPLITS:
            for b in cd.SPLITS:
                if a < b:
                    assert not files[a] & files[b], (category, a, b)
        classes = len(cd.category_classes(category))
        assert classes >= 2
        assert Counter(label for _, label in split["shots"]) == {c: cd.SHOT_EMOJI for c in range(classes)}
        for s in ("train", "validation", "test"):
            assert {label for _, label in split[s]} == set(range(classes)), (category, s)
        # Both pairs of a category hold the same emoji in the same order, drawn by different artists.
        a, b = (cd.pair_arrays(cd.pair_name(category, d.name), "test") for d in cd.DOMAINS)
        assert (a[1] == b[1]).all() and a[0].shape == b[0].shape and (a[0] != b[0]).any()


@needs_emoji
def test_pair_arrays_are_32px_rgb_and_refuse_unknown_names():
    images, labels, classes = cd.pair_arrays("animals-noto", "train")
    assert images.shape[1:] == (32, 32, 3) and images.dtype.name == "uint8" and len(images) == len(labels)
    assert classes == len(cd.category_classes("animals")) and labels.max() < classes
    from fusionbench_core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown mini-compositional task 'animals-apple'"):
        cd.pair_arrays("animals-apple", "train")
