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
    """Raise ValueError unless ``template`` has a ``{text}`` slot, no unknown slots, no format
    specs or conversions, and renders (as it will for every text, in training and serving)."""
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"prompt template is malformed: {exc}; escape literal braces as {{{{ "
                         "and }}") from exc
    for _, name, spec, conversion in parsed:
        # "{text:>200000000}" would pad every text to 200 MB; "{text!x}" fails only when used.
        if name is not None and (spec or conversion):
            written = "{" + name + (f"!{conversion}" if conversion else "") + (
                f":{spec}" if spec else "") + "}"
            raise ValueError(
                f"prompt template placeholder {written[:80]} has a format spec or conversion; "
                f"write {{{name}}} alone (text and labels are inserted as they are)"
            )
    fields = {name for _, name, _, _ in parsed if name is not None}
    if "text" not in fields:
        raise ValueError("prompt template must contain a {text} placeholder")
    unknown = fields - {"text", "labels"}
    if unknown:
        raise ValueError(
            f"prompt template has unknown placeholders {sorted(unknown)}; only {{text}} and "
            "{labels} are filled in"
        )
    try:
        template.format(text="text", labels="a, b")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"prompt template does not render: {exc}; escape literal braces "
                         "as {{ and }}") from exc


def classification_messages(template: str, text: str, labels: list[str]) -> list[dict[str, str]]:
    """Chat messages asking to classify ``text``; the expected assistant reply is the label."""
    return [{"role": "user", "content": template.format(text=text, labels=", ".join(labels))}]
