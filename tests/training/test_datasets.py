"""Dataset validation: every problem reported with its line number; duplicates are warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.datasets import (
    MAX_STORED_WARNINGS,
    ChatExample,
    content_hash,
    sniff_format,
    validate_chat_dataset,
    validate_classification_dataset,
    validate_dataset,
)
from training.errors import DatasetError, DatasetIssue
from training.tool_calls import MAX_NESTING, MAX_TOOL_CALLS, MAX_TOOLS

DATA = (Path(__file__).resolve().parents[2] / "tuneloop" / "data" / "vader_sentiment"
        / "vader_sentiment.jsonl")


def jsonl(*records: object) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def lines_of(report) -> dict[int | None, list[str]]:
    out: dict[int | None, list[str]] = {}
    for issue in report.issues:
        out.setdefault(issue.line, []).append(issue.message)
    return out


def test_valid_chat_dataset_has_stats_and_hash():
    data = jsonl(chat("hi", "hello"), chat("bye", "goodbye"))
    report = validate_chat_dataset(data, count_tokens=lambda messages: 10)
    assert report.ok
    assert [e.line for e in report.examples] == [1, 2]
    assert isinstance(report.examples[0], ChatExample)
    assert report.stats.examples == 2
    assert report.stats.tokens == 20
    assert report.stats.sha256 == content_hash(data)
    assert report.raise_for_issues() is report


def test_bad_chat_file_reports_every_problem_with_its_line():
    data = jsonl(
        chat("ok", "fine"),                                             # 1
        '{"messages": [',                                                # 2 bad JSON
        {"messages": [{"role": "user", "content": "no reply"}]},         # 3 no assistant
        {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},  # 4 no role
        {"messages": [{"role": "wizard", "content": "x"},
                      {"role": "assistant", "content": "y"}]},           # 5 unknown role
        {"messages": [{"role": "user", "content": "  "},
                      {"role": "assistant", "content": "y"}]},           # 6 empty content
        {"prompt": "old format"},                                        # 7 no messages
        chat("ok", "fine"),                                              # 8 duplicate: warning
        chat("a long one", "word " * 50),                                # 9 too long
    )
    report = validate_chat_dataset(
        data, count_tokens=lambda m: sum(len(x["content"].split()) for x in m), max_tokens=20
    )
    by_line = lines_of(report)
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 9]
    assert "invalid JSON" in by_line[2][0]
    assert "no assistant message" in by_line[3][0]
    assert 'no "role"' in by_line[4][0]
    assert "unknown role 'wizard'" in by_line[5][0]
    assert "empty content" in by_line[6][0]
    assert '"messages"' in by_line[7][0]
    assert "over the maximum of 20" in by_line[9][0]
    assert [(w.line, w.message) for w in report.warnings] == [
        (8, "duplicate of line 1; dropped, trained once")]
    assert [e.line for e in report.examples] == [1]
    with pytest.raises(DatasetError) as caught:
        report.raise_for_issues("train.jsonl")
    message = str(caught.value)
    assert "train.jsonl has 7 problem(s)" in message
    assert "line 5: messages[0] has unknown role 'wizard'" in message
    assert caught.value.status == 400
    assert all(isinstance(i, DatasetIssue) for i in caught.value.issues)


def test_chat_blank_lines_are_skipped_and_invalid_utf8_is_reported():
    data = jsonl(chat("a", "b")) + b"\n" + b'{"messages": "\xff"}\n' + jsonl(chat("c", "d"))
    report = validate_chat_dataset(data)
    assert lines_of(report) == {3: [report.issues[0].message]}
    assert "UTF-8" in report.issues[0].message
    assert [e.line for e in report.examples] == [1, 4]


def test_empty_file_is_an_issue():
    assert [str(i) for i in validate_chat_dataset(b"\n\n").issues] == ["the file has no examples"]
    assert validate_classification_dataset(b"", fmt="jsonl").issues[0].line is None


def test_classification_jsonl_problems_with_lines():
    data = jsonl(
        {"text": "great", "label": "pos"},     # 1
        {"text": "", "label": "neg"},          # 2 empty text
        {"text": "meh"},                       # 3 missing label
        {"text": "bad", "label": "neg"},       # 4
        {"text": "Great ", "label": "neg"},    # 5 text of 1, other label: a warning
        "not json",                            # 6
        {"text": "fine", "label": " "},        # 7 empty label
    )
    report = validate_classification_dataset(data)
    by_line = lines_of(report)
    assert sorted(by_line) == [2, 3, 6, 7]
    assert by_line[2] == ["empty text"]
    assert "missing field(s): label" in by_line[3][0]
    assert by_line[7] == ["empty label"]
    assert [w.line for w in report.warnings] == [5]
    assert report.stats.label_counts == {"neg": 1, "pos": 1}
    assert report.labels == ["neg", "pos"]


def test_exact_duplicates_are_warnings_and_trained_once():
    data = jsonl({"text": "great", "label": "pos"}, {"text": "bad", "label": "neg"},
                 {"text": "great", "label": "pos"}, {"text": "Great ", "label": "pos"})
    report = validate_dataset(data, "classification", count_tokens=lambda m: 5)
    assert report.ok
    assert [(e.line, e.label) for e in report.examples] == [(1, "pos"), (2, "neg")]
    assert [(w.line, w.message) for w in report.warnings] == [
        (3, "duplicate of line 1; dropped, trained once"),
        (4, "duplicate of line 1; dropped, trained once")]
    stats = report.stats.to_dict()
    assert (stats["examples"], stats["duplicates"], stats["conflicting_labels"]) == (2, 2, 0)
    assert stats["label_counts"] == {"neg": 1, "pos": 1} and stats["tokens"] == 10
    assert stats["warnings"] == [{"line": 3, "message": "duplicate of line 1; dropped, trained once"},
                                 {"line": 4, "message": "duplicate of line 1; dropped, trained once"}]
    json.dumps(stats)  # stored as JSON with the file

    chats = validate_dataset(jsonl(chat("hi", "hello"), chat("hi", "hello"), chat("hi", "hey")),
                             "chat", strict=True)  # strict is about labels: chat ignores it
    assert chats.ok and [e.line for e in chats.examples] == [1, 3]
    assert [w.line for w in chats.warnings] == [2] and chats.stats.duplicates == 1


def test_conflicting_labels_are_a_warning_unless_strict():
    data = jsonl({"text": "fine", "label": "pos"}, {"text": "bad", "label": "neg"},
                 {"text": "fine", "label": "neg"}, {"text": "fine", "label": "pos"})
    report = validate_classification_dataset(data)
    assert report.ok
    assert [(e.line, e.label) for e in report.examples] == [(1, "pos"), (2, "neg")]
    assert [(w.line, w.message) for w in report.warnings] == [
        (3, "same text as line 1 with a different label ('neg' vs 'pos'); dropped, line 1's "
            "label kept"),
        (4, "duplicate of line 1; dropped, trained once")]
    assert (report.stats.duplicates, report.stats.conflicting_labels) == (1, 1)

    strict = validate_dataset(data, "classification", strict=True)
    assert [(i.line, i.message) for i in strict.issues] == [
        (3, "duplicate text of line 1 with a different label ('pos'); give one text one label "
            "(strict validation)")]
    assert [w.line for w in strict.warnings] == [4]  # an exact duplicate stays a warning
    with pytest.raises(DatasetError, match="line 3: duplicate text of line 1"):
        strict.raise_for_issues()


def test_stored_warnings_are_capped_and_the_counts_are_not():
    data = jsonl({"text": "a", "label": "x"}, {"text": "b", "label": "y"},
                 *[{"text": "a", "label": "x"}] * (MAX_STORED_WARNINGS + 5))
    report = validate_classification_dataset(data)
    assert len(report.warnings) == report.stats.duplicates == MAX_STORED_WARNINGS + 5
    assert len(report.stats.to_dict()["warnings"]) == MAX_STORED_WARNINGS
    assert report.stats.examples == 2


def test_classification_single_label_is_a_file_issue():
    report = validate_classification_dataset(jsonl({"text": "a", "label": "x"},
                                                   {"text": "b", "label": "x"}))
    assert [i.line for i in report.issues] == [None]
    assert "only one label ('x')" in report.issues[0].message


def test_classification_csv_with_quoted_multiline_field_keeps_line_numbers():
    data = (b'text,label,domain\n'
            b'"first, with comma",pos,a\n'
            b'"two\nlines",neg,b\n'
            b',neg,c\n'
            b'short row\n'
            b'ok,unknown,d\n')
    report = validate_classification_dataset(data, filename="d.csv", labels=["pos", "neg"])
    by_line = lines_of(report)
    assert by_line[5] == ["empty text"]
    assert "expected 3 columns" in by_line[6][0]
    assert "unknown label 'unknown'" in by_line[7][0]
    assert [(e.line, e.label) for e in report.examples] == [(2, "pos"), (3, "neg")]


@pytest.mark.parametrize(("data", "line"), [
    (b"text,label\nok,pos\n\"" + b"a" * 200_000 + b"\",neg\n", 3),
    (b"text,label\nok,pos\n" + b"a" * 140_000 + b",neg\n", 3),
    (b"\"" + b"h" * 140_000 + b"\",label\n", 1),
], ids=["quoted-field", "unquoted-field", "header-field"])
def test_a_csv_field_over_the_csv_module_limit_is_an_issue_not_a_crash(data, line):
    report = validate_classification_dataset(data, fmt="csv")
    assert [(i.line, i.message[:44]) for i in report.issues if i.line is not None] == [
        (line, "a CSV field is longer than 131072 characters")]


def test_csv_without_required_columns():
    report = validate_classification_dataset(b"sentence,class\nhi,x\n", fmt="csv")
    assert report.issues[0].line == 1
    assert "text and label" in report.issues[0].message


def test_classification_token_limit_counts_the_templated_conversation():
    seen = []

    def count(messages):
        seen.append(messages)
        return 100 if "long" in messages[0]["content"] else 5

    data = jsonl({"text": "short", "label": "a"}, {"text": "long one", "label": "b"})
    report = validate_classification_dataset(data, count_tokens=count, max_tokens=50)
    assert [i.line for i in report.issues] == [2]
    assert seen[0][0]["role"] == "user" and "short" in seen[0][0]["content"]
    assert "a, b" in seen[0][0]["content"]
    assert seen[0][-1] == {"role": "assistant", "content": "a"}
    # stats describe the valid examples only
    assert report.stats.tokens == 5 and report.stats.max_example_tokens == 5
    assert report.stats.label_counts == {"a": 1}


def test_sniff_format_and_dispatch():
    assert sniff_format(b'{"text": 1}') == "jsonl"
    assert sniff_format(b"text,label\n") == "csv"
    assert sniff_format(b"{}", "x.CSV") == "csv"
    with pytest.raises(ValueError):
        validate_dataset(b"", "regression")


def test_shipped_dataset_is_valid():
    data = DATA.read_bytes()
    report = validate_classification_dataset(data, filename=DATA.name)
    assert report.ok, report.issues[:5]
    assert report.stats.label_counts == {"negative": 280, "neutral": 280, "positive": 280}
    assert report.stats.examples == 840


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def call(name: str = "get_weather", arguments: object = '{"city": "Paris"}', id: str = "call_1") -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_chat(calls: object = None, answer: dict | None = None, **extra: object) -> dict:
    """OpenAI's fine-tuning tool-calling example: a call, its result, the final reply."""
    return {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call()] if calls is None else calls},
        answer or {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        {"role": "assistant", "content": "It is 21 degrees in Paris."},
    ], "tools": [WEATHER_TOOL], **extra}


def test_an_openai_tool_calling_example_is_accepted_and_the_call_is_a_training_target(
        base_model_dir):
    from transformers import AutoTokenizer

    from training.tokenize import IGNORE_INDEX, conversation_token_counter, tokenize_example

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    report = validate_chat_dataset(jsonl(tool_chat()), count_tokens=conversation_token_counter(
        tokenizer), max_tokens=1024)
    assert report.ok, report.issues
    (example,) = report.examples
    rendered_call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert example.messages[1] == {"role": "assistant", "content": rendered_call}
    assert example.messages[2] == {"role": "tool", "content": '{"temp_c": 21}'}

    tokenized = tokenize_example(tokenizer, example)
    targets = tokenizer.decode([t for t in tokenized.labels if t != IGNORE_INDEX])
    assert rendered_call in targets and "It is 21 degrees in Paris." in targets
    assert '{"temp_c": 21}' not in targets and "Weather in Paris?" not in targets
    whole = tokenizer.decode(tokenized.input_ids)
    assert '<|im_start|>tool\n{"temp_c": 21}<|im_end|>' in whole

    with_text = tool_chat()
    with_text["messages"][1]["content"] = "Let me check."
    with_text["messages"][1]["tool_calls"].append(call(arguments='{"city": "Lyon"}', id="call_2"))
    (two,) = validate_chat_dataset(jsonl(with_text)).examples
    assert two.messages[1]["content"] == (
        'Let me check.\n' + rendered_call + '\n<tool_call>\n{"name": "get_weather", '
        '"arguments": {"city": "Lyon"}}\n</tool_call>')


def test_malformed_tool_calls_and_tool_messages_are_line_numbered_issues():
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    data = jsonl(
        tool_chat(),                                                              # 1 valid
        tool_chat(calls={"id": "call_1"}),                                        # 2 not a list
        tool_chat(calls=[{"id": "call_1", "type": "function", "function": {"arguments": "{}"}}]),
        tool_chat(calls=[call(arguments={"city": "Paris"})]),                    # 4 not a string
        tool_chat(calls=[call(arguments="{not json")]),                          # 5 not JSON
        tool_chat(answer={"role": "tool", "content": "21"}),                     # 6 no tool_call_id
        tool_chat(answer={"role": "tool", "tool_call_id": "call_1"}),            # 7 no content
        tool_chat(calls=[call(id=f"c{k}") for k in range(MAX_TOOL_CALLS + 1)]),  # 8 too many
        tool_chat(tools=[WEATHER_TOOL] * (MAX_TOOLS + 1)),                       # 9 tools bound
        tool_chat(calls=[call(arguments='{"a": ' + deep + "}")]),                # 10 nesting
        tool_chat(calls=[call(name="delete_everything")]),                       # 11 unknown tool
        tool_chat(answer={"role": "tool", "tool_call_id": "call_9", "content": "x"}),  # 12
        {"messages": [{"role": "user", "content": "hi", "tool_calls": [call()]},
                      {"role": "assistant", "content": "hello"}]},               # 13 not assistant
        "[" * 100_000 + "]" * 100_000,                                           # 14 JSON bomb
    )
    report = validate_chat_dataset(data)
    by_line = lines_of(report)
    assert sorted(by_line) == list(range(2, 15))
    assert by_line[2] == ['messages[1] "tool_calls" must be a non-empty list of {"id", "type": '
                          '"function", "function": {"name", "arguments"}} objects']
    assert by_line[3] == ['messages[1].tool_calls[0] "function.name" must be 1-64 letters, '
                          'digits, _ or -']
    assert by_line[4] == by_line[5] == [
        'messages[1].tool_calls[0] "function.arguments" must be a string holding a JSON object '
        f'(nested at most {MAX_NESTING} deep), e.g. "{{\\"city\\": \\"Paris\\"}}"']
    assert by_line[6] == ['messages[2] (tool) needs a "tool_call_id" naming the call it answers']
    assert by_line[7] == ['messages[2] has no "content"']
    assert by_line[8][0] == (f"messages[1] has {MAX_TOOL_CALLS + 1} tool calls; at most "
                             f"{MAX_TOOL_CALLS} per message")
    assert by_line[9][0] == f'"tools" has {MAX_TOOLS + 1} entries; at most {MAX_TOOLS}'
    assert "nested at most" in by_line[10][0]
    assert by_line[11] == ["messages[1].tool_calls[0] calls 'delete_everything', which is not in "
                           "the example's \"tools\""]
    assert by_line[12] == ["messages[2] answers tool_call_id 'call_9', which no earlier assistant "
                           "tool call has"]
    assert by_line[13] == ['messages[0] "tool_calls" are only allowed on assistant messages']
    assert by_line[14] == ["JSON nested too deeply to read"]
    assert [e.line for e in report.examples] == [1]
