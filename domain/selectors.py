"""Model selectors, as entitlements and directives name models: an exact model id,
`family:NAME`, or `*`."""

from __future__ import annotations


def selector_matches(selector: str, model: str, family: str) -> bool:
    """An exact model id, `family:NAME`, or `*`."""
    if selector == "*":
        return True
    if selector.startswith("family:"):
        return selector[7:] == family
    return selector == model


def covers(selectors: tuple[str, ...], memo: dict[str, bool], model: str, family: str) -> bool:
    """Selector matching, remembered per model: a model's family never changes."""
    try:
        return memo[model]
    except KeyError:
        answer = memo[model] = any(selector_matches(s, model, family) for s in selectors)
        return answer
