"""Wording shared by the library's error messages."""


def a_or_an(noun: str) -> str:
    """``"an int"``, ``"a float"``: the noun with its indefinite article."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
