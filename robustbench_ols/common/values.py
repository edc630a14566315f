"""Values given as text (method options, attack options, --sweep), parsed the same way wherever they appear."""
from __future__ import annotations

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_bool(text: str) -> bool:
    """true/yes/on/1 or false/no/off/0, in any case; ValueError otherwise."""
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean ({'/'.join(TRUE)} or {'/'.join(FALSE)})")
