"""Small datasets shipped with the package (no downloads); see ``make_text.py``."""
