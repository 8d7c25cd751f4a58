"""The CPU mini vision suite: real 32x32 image tasks built offline (see ``mini.data``)."""
