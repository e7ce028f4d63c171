"""Prompt framing shared by training and serving, so both see exactly the same tokens.

A classification adapter learns to answer the user message built here with its label, alone.
Serving sends the same messages through the engine's chat template and scores the labels.
"""

from __future__ import annotations

DEFAULT_CLASSIFICATION_TEMPLATE = (
    "Classify the text into one of these labels: {labels}.\n"
    "Answer with the label only.\n\nText: {text}"
)


def validate_template(template: str) -> None:
    """Raise ValueError unless ``template`` has a ``{text}`` slot and no unknown slots."""
    import string

    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if "text" not in fields:
        raise ValueError("prompt template must contain a {text} placeholder")
    unknown = fields - {"text", "labels"}
    if unknown:
        raise ValueError(
            f"prompt template has unknown placeholders {sorted(unknown)}; only {{text}} and "
            "{labels} are filled in"
        )


def classification_messages(template: str, text: str, labels: list[str]) -> list[dict[str, str]]:
    """Chat messages asking to classify ``text``; the expected assistant reply is the label."""
    return [{"role": "user", "content": template.format(text=text, labels=", ".join(labels))}]
