"""Prompt templates are rendered at registration: no format specs, conversions or bad braces."""

from __future__ import annotations

import pytest

from services.labels import MAX_LABEL_CHARS, MAX_LABELS
from services.prompts import (
    DEFAULT_CLASSIFICATION_TEMPLATE,
    classification_messages,
    validate_template,
)
from services.settings import Settings


@pytest.mark.parametrize("template", [
    DEFAULT_CLASSIFICATION_TEMPLATE, "{text}", "Labels {labels}; text {text}; braces {{ok}}"])
def test_plain_templates_pass(template):
    validate_template(template)
    assert classification_messages(template, "t", ["a", "b"])[0]["content"]


@pytest.mark.parametrize(("template", "fix"), [
    ("{text:>200000000}", "write {text} alone"),  # would pad every text to 200 MB
    ("{text!x}", "write {text} alone"),  # accepted before, a 500 at the first classify
    ("{text!r}", "write {text} alone"),
    ("{text:{labels}}", "write {text} alone"),
    ("{text} {labels!s:^9}", "write {labels} alone"),
    ("{text} }", "escape literal braces"),
    ("{text", "escape literal braces"),
    ("{text.upper} {text}", "unknown placeholders"),
    ("{text} {0}", "unknown placeholders"),
])
def test_unsafe_templates_are_refused_with_the_fix(template, fix):
    with pytest.raises(ValueError, match="prompt template") as err:
        validate_template(template)
    assert fix in str(err.value)


def test_label_caps_default_to_the_settings_defaults(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert (settings.max_labels, settings.max_label_chars) == (MAX_LABELS, MAX_LABEL_CHARS)
