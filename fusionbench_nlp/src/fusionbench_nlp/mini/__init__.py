"""The CPU mini text suite: real text classification tasks built offline (see ``mini.data``)."""
