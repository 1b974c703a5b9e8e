"""satn: speech emotion recognition with self-attention transfer and temporal attention networks."""

__version__ = "0.1.0"
