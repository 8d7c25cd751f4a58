"""Class descriptions of the mini-text tasks: the text side of their zero-shot heads (no torch).

A CLIP zero-shot head embeds every class name in many prompt templates and averages. The mini-text
heads do the same with all-MiniLM-L6-v2, a sentence-embedding model: each class has a few short
descriptions written from what the class *is* (the task's documentation, the source's own labels:
WordNet's lexicographer file names, the novels' titles and heroines, the books of the canon),
never from its training texts; every description is put in every template of
:data:`TEMPLATES`, and the head's class vector is the centred mean of their embeddings
(:func:`fusionbench_core.suitekit.heads.cosine_head`). The pretrained model scored with these heads
is a true zero-shot baseline.

The Android/iPhone task has no name a sentence embedding could recognise; its descriptions use
what is publicly known of that account (Android: the owner's own, often combative, posts;
iPhone: staff's announcements with links and hashtags). The pair task ``gloss_match`` is
described in words too, and its zero-shot score stays near chance, as CLIP's does on some tasks.
"""

from __future__ import annotations

TEMPLATES: tuple[str, ...] = ("{}", "This is {}.", "Here is {}.")
"""Prompt templates every description is put in (``str.format`` with the description)."""

CLASS_DESCRIPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "sentiment": {
        "other": ("a disappointed, negative review of a food product", "a mediocre review: the product was just okay",
                  "a complaint about a product that tasted bad"),
        "great": ("an enthusiastic, glowing review of a delicious food product",
                  "a five-star review: I love this and highly recommend it", "praise for a product that tastes great"),
    },
    "tweet_device": {
        "Android": ("an angry, emotional tweet attacking opponents and the media",
                    "a personal rant with exclamation marks", "a boastful insult aimed at a rival"),
        "iPhone": ("an official campaign announcement with a link or hashtag",
                   "a message thanking supporters and inviting them to an event",
                   "a neutral promotional post with a photo link"),
    },
    "fortune_topic": {
        "people": ("a quotation by a famous person about people and life",),
        "definitions": ("a humorous dictionary definition of a word",),
        "cookie": ("a fortune cookie saying about your future",),
        "computers": ("a joke about computers, programmers and software",),
        "songs-poems": ("lines from a song or a poem",),
        "politics": ("a quotation about politics, government and politicians",),
        "miscellaneous": ("an odd miscellaneous saying",),
        "work": ("a joke about work, jobs, bosses and the office",),
    },
    "language_id": {
        "en": ("This is a sentence written in English.", "English text"),
        "de": ("Dies ist ein Satz auf Deutsch.", "deutscher Text"),
        "es": ("Esta es una frase en español.", "texto en español"),
        "it": ("Questa è una frase in italiano.", "testo in italiano"),
        "pl": ("To jest zdanie po polsku.", "tekst po polsku"),
        "pt": ("Esta é uma frase em português do Brasil.", "texto em português"),
    },
    "supersense": {
        "noun.Tops": ("a very general, abstract entity",),
        "noun.act": ("an act or action someone does",),
        "noun.animal": ("an animal",),
        "noun.artifact": ("a man-made object or tool",),
        "noun.attribute": ("an attribute or property of people and objects",),
        "noun.body": ("a part of the body",),
        "noun.cognition": ("a cognitive process or piece of knowledge",),
        "noun.communication": ("communication, language or a message",),
        "noun.event": ("a natural event or happening",),
        "noun.feeling": ("a feeling or emotion",),
        "noun.food": ("a food or drink",),
        "noun.group": ("a group or collection of people or things",),
        "noun.location": ("a place or spatial location",),
        "noun.motive": ("a goal, reason or motive",),
        "noun.object": ("a natural object, not made by people",),
        "noun.person": ("a person or kind of person",),
        "noun.phenomenon": ("a natural phenomenon",),
        "noun.plant": ("a plant",),
        "noun.possession": ("possession, money or transfer of property",),
        "noun.process": ("a natural process",),
        "noun.quantity": ("a quantity or unit of measure",),
        "noun.relation": ("a relation between people, things or ideas",),
        "noun.shape": ("a two or three dimensional shape",),
        "noun.state": ("a stable state or condition",),
        "noun.substance": ("a substance or material",),
        "noun.time": ("time or a period of time",),
    },
    "austen_novel": {
        "Sense & Sensibility": ("a passage from Sense and Sensibility, about Elinor and Marianne Dashwood",),
        "Pride & Prejudice": ("a passage from Pride and Prejudice, about Elizabeth Bennet and Mr. Darcy",),
        "Mansfield Park": ("a passage from Mansfield Park, about Fanny Price and Edmund Bertram",),
        "Emma": ("a passage from Emma, about Emma Woodhouse and Mr. Knightley",),
        "Northanger Abbey": ("a passage from Northanger Abbey, about Catherine Morland and Henry Tilney",),
        "Persuasion": ("a passage from Persuasion, about Anne Elliot and Captain Wentworth",),
    },
    "bible_section": {
        "law": ("a verse from the books of the law: commandments, offerings and Moses",),
        "history": ("a verse of historical narrative about kings and battles of Israel",),
        "poetry": ("a verse of poetry, psalms and wisdom sayings",),
        "prophecy": ("a verse of prophecy: thus saith the Lord to his people",),
        "gospels": ("a verse from the gospels about Jesus and his disciples",),
        "epistles": ("a verse from an apostle's letter to a church about faith and grace",),
    },
    "gloss_match": {
        "mismatch": ("a word followed by the definition of a different, unrelated word",),
        "match": ("a word followed by its own correct definition",),
    },
}
"""Descriptions per task and class name (the names of the task's ``ClassLabel``)."""


def description_texts(task: str, class_names: list[str]) -> tuple[list[str], list[int]]:
    """Every (template, description) text of a task's classes, with its class index."""
    from fusionbench_core.errors import ConfigError

    table = CLASS_DESCRIPTIONS.get(task)
    if table is None:
        raise ConfigError(f"mini-text task '{task}' has no class descriptions (fusionbench_nlp.mini.descriptions)")
    texts, labels = [], []
    for index, name in enumerate(class_names):
        if name not in table:
            raise ConfigError(f"mini-text task '{task}': class '{name}' has no description")
        for description in table[name]:
            for template in TEMPLATES:
                texts.append(template.format(description))
                labels.append(index)
    return texts, labels
