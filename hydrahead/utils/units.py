"""Numbers written with a suffix, one convention everywhere.

- **Lengths** (a prompt, a context, a training row: `--lengths`, `--length`, `--bucket`, `--chunk`, a
  recipe's `seq_len`) count in powers of two, as RULER and model cards write them: `k` = 1024, `m` =
  1024^2. "16k" is 16,384; "1.5k" is 1,536.
- **Token budgets** (a recipe's `stages.*.tokens`) count in powers of ten, as papers write them: `K` =
  10^3, `M` = 10^6, `B`/`G` = 10^9, `T` = 10^12. "300M" is 300,000,000; "16K" is 16,000.
- Either can be written explicitly in both places: `Ki`, `Mi`, `Gi` always mean 1024-based and `e`
  notation or a plain integer always means itself ("16Ki" = "16384" = 16,384; "16000" = "16e3" = 16,000).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

_BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30}
_LENGTH = {"": 1, "k": 2**10, "m": 2**20, **_BINARY}
_TOKENS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12, **_BINARY}
_DIGITS = r"[0-9](?:_?[0-9])*"  # an underscore only between digits, as Python's own literals allow
_NUMBER = rf"\s*({_DIGITS}(?:\.(?:{_DIGITS})?)?(?:e[0-9]{{1,3}})?)\s*([a-z]{{0,2}})\s*"  # e999 at most


def _parse(value: Any, units: dict[str, int], what: str, example: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(_NUMBER, value, flags=re.IGNORECASE)
        suffix = match.group(2).lower() if match else None
        if match and suffix in units and not ("e" in match.group(1).lower() and suffix):  # 1e3k: one or the other
            number = Fraction(match.group(1).replace("_", "")) * units[suffix]  # exact: 0.3B is 3e8, 1000.7k no
            if number.denominator == 1:
                return int(number)
            raise ValueError(f"expected {what} such as {example}, got {value!r}, which is not a whole number")
    raise ValueError(f"expected {what} such as {example}, got {value!r}")


MAX_LENGTH = 2**24  # 16m tokens: beyond any model's context; a typo (1e30, 4m for 4k) rather than a length


def parse_length(value: Any) -> int:
    """A sequence length: 4096, "4k" (= 4096), "1.5k", "16Ki", at most MAX_LENGTH; ValueError otherwise (k = 1024)."""
    n = _parse(value, _LENGTH, "a length in tokens", "4096, 4k or 1.5k (k = 1024)")
    if n > MAX_LENGTH:
        raise ValueError(f"expected a length in tokens of at most 16m, got {value!r}")
    return n


MAX_TOKENS = 10**15  # a quadrillion: beyond any training run; a typo (1e400) rather than a budget


def parse_tokens(value: Any) -> int:
    """A token budget: 300000000, "300M", "0.3B", "16K" (= 16,000), "1_000_000", "64Ki", at most MAX_TOKENS;
    ValueError otherwise."""
    n = _parse(value, _TOKENS, "a token count", "300000000, '300M' or '0.3B' (M = 10^6)")
    if n > MAX_TOKENS:
        raise ValueError(f"expected a token count of at most 10^15, got {value!r}")
    return n


def format_length(n: int) -> str:
    """4096 -> '4k', 1536 -> '1.5k', 1000 -> '1000' (k = 1024, as `parse_length` reads it)."""
    return f"{n / 1024:g}k" if n >= 1024 and n % 256 == 0 else str(n)


def counted(n: int, noun: str) -> str:
    """12345, "probe" -> '12,345 probes'; 1 -> '1 probe' (a regular plural: the noun and an s)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
