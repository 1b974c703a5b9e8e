"""The one base of every error that a user's input causes (config, corpus, audio, folds).

The CLI turns these into one clear line instead of a traceback; anything else
is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a config value, a corpus layout, an audio file, a fold plan."""
