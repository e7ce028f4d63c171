"""Publishing a finished run: the gate against the champion and the parity check before a
version is servable (scripted runner, the real base model for PEFT, fake engines; the parity
comparison itself also on real PEFT adapters: the same one passes, a different one is refused).

The real engine path (a served app, vLLM) is in test_job_end_to_end.py.
"""

from __future__ import annotations

import json

import pytest

from services import registry
from services.artifacts import parse_artifact_ref
from services.errors import NotFound
from services.store.models import JobStatus
from tests.support.scripted_runner import ScriptedRunner
from training.jobs import store
from training.jobs.files import store_file
from training.jobs.intake import JobRequest, create_job
from training.jobs.manager import JobManager
from training.jobs.parity import (
    GREEDY_TIE_MARGIN,
    LABEL_TOLERANCE,
    Divergence,
    EngineUnavailable,
    compare_label_probabilities,
    compare_replies,
    first_divergence,
    peft_greedy_steps,
    peft_label_probabilities,
)

# -- pure -----------------------------------------------------------------------------------


def test_compare_replies_names_the_first_difference():
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    assert compare_replies(prompts, ["a", " b", "c\n"], ["a", "b", "c"]).passed
    result = compare_replies(prompts, ["a", "B", "C"], ["a", "b", "c"])
    assert not result.passed
    assert result.mismatch == {"index": 1, "prompt": prompts[1], "engine": "B", "peft": "b"}
    message = result.message("x@v1")
    assert "prompt 1 ('q1')" in message and "'B'" in message and "'b'" in message
    with pytest.raises(ValueError):
        compare_replies(prompts, ["a"], ["a", "b", "c"])


# PEFT's greedy path "Snow is white." with its alternatives (log-probabilities) at each token
SNOW = [[("Snow", -0.1), ("White", -2.9)],
        [(" is", -0.05), (" looks", -3.5)],
        [(" white", -0.62), (" usually", -0.83), (" cold", -4.0)],  # a near-tie: gap 0.21
        [(".", -0.3), ("!", -0.6), (None, -2.0)],
        [(None, -0.01), ("\n", -5.0)]]


def test_first_divergence_finds_the_token_and_peft_s_gap_there():
    assert first_divergence(" Snow is white. ", SNOW) is None
    tie = first_divergence("Snow is usually white.", SNOW)
    assert tie.step == 2 and tie.gap == pytest.approx(0.21)
    assert first_divergence("Snow is white", SNOW).gap == pytest.approx(1.7)  # the engine ended
    assert first_divergence("Snow is white.\nYes", SNOW).gap == pytest.approx(4.99)
    unknown = first_divergence("Snow is blue.", SNOW)  # not among PEFT's alternatives
    assert unknown.step == 2 and unknown.gap is None
    assert unknown.gap_at_least == pytest.approx(3.38)
    # PEFT ran out of new tokens (no end step) while the engine's text goes on
    assert first_divergence("Snow is white. It", SNOW[:4]) == Divergence(4, None, None)


def test_chat_parity_accepts_a_near_tie_and_refuses_a_clear_divergence():
    prompts = [[{"role": "user", "content": "What is the color of snow?"}]]
    peft = ["Snow is white."]
    # exact text alone would refuse the near-tie
    assert not compare_replies(prompts, ["Snow is usually white."], peft).passed
    tie = compare_replies(prompts, ["Snow is usually white."], peft, steps=[SNOW])
    assert tie.passed and tie.near_ties == 1 and tie.tolerance == GREEDY_TIE_MARGIN
    assert tie.largest_difference == pytest.approx(0.21)
    assert "1 of them up to a near-tie" in tie.message("c@v1")
    same = compare_replies(prompts, ["Snow is white."], peft, steps=[SNOW])
    assert same.passed and same.near_ties == 0 and same.largest_difference == 0.0

    for reply, gap in [("White snow.", "2.800"), ("Snow is blue.", "at least 3.380")]:
        refused = compare_replies(prompts, [reply], peft, steps=[SNOW])
        assert not refused.passed and refused.mismatch["step"] in (0, 2)
        message = refused.message("c@v1")
        assert "held-out prompt 0 ('What is the color of snow?')" in message
        assert gap in message and f"near-tie margin {GREEDY_TIE_MARGIN:g}" in message
    # a tighter margin refuses the same near-tie
    assert not compare_replies(prompts, ["Snow is usually white."], peft, steps=[SNOW],
                               margin=0.1).passed
    with pytest.raises(ValueError):
        compare_replies(prompts, peft, peft, steps=[SNOW, SNOW])


def test_label_parity_passes_a_near_tie_that_flips_the_top_label():
    texts = ["clear", "a near tie"]
    peft = [{"neg": 0.9, "pos": 0.1}, {"neg": 0.51, "pos": 0.49}]
    engine = [{"neg": 0.89, "pos": 0.11}, {"neg": 0.48, "pos": 0.52}]  # greedy labels differ
    result = compare_label_probabilities(texts, engine, peft)
    assert result.passed and result.kind == "label_probabilities"
    assert result.largest_difference == pytest.approx(0.03)
    assert result.tolerance == LABEL_TOLERANCE
    assert "within 0.1 of PEFT's (largest difference 0.030)" in result.message("x@v2")


def test_label_parity_refuses_probabilities_that_differ_beyond_the_tolerance():
    texts = ["same", "different adapter"]
    peft = [{"neg": 0.9, "pos": 0.1}, {"neg": 0.8, "pos": 0.2}]
    engine = [{"neg": 0.9, "pos": 0.1}, {"neg": 0.55, "pos": 0.45}]
    result = compare_label_probabilities(texts, engine, peft)
    assert not result.passed and result.mismatch["index"] == 1
    assert result.mismatch["difference"] == pytest.approx(0.25)
    message = result.message("x@v2")
    assert "held-out text 1 ('different adapter')" in message
    assert "{neg: 0.550, pos: 0.450}" in message and "more than 0.1" in message
    other_labels = compare_label_probabilities(["t"], [{"a": 1.0, "b": 0.0}],
                                               [{"neg": 1.0, "pos": 0.0}])
    assert not other_labels.passed
    with pytest.raises(ValueError):
        compare_label_probabilities(texts, engine[:1], peft)


VADER = [("This product broke after two days, total waste of money.", "negative"),
         ("The committee will meet on Tuesday to review the budget.", "neutral"),
         ("Absolutely love it, works perfectly and looks great!", "positive"),
         ("The editorial board supports the new transit plan.", "neutral")]


@pytest.fixture(scope="module")
def scrambled_adapter(base_model_dir, tmp_path_factory):
    """A genuinely different LoRA: random (non-zero) A and B on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("scrambled")
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules="all-linear",
                                     init_lora_weights=False)).save_pretrained(str(out))
    return out


def test_label_parity_on_real_adapters(base_model_dir, peft_adapter, scrambled_adapter):
    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
    from training.scoring import load_model

    texts, labels = [t for t, _ in VADER], ["negative", "neutral", "positive"]

    def probabilities(adapter):
        model, tokenizer = load_model(base_model_dir, adapter)
        return peft_label_probabilities(model, tokenizer, DEFAULT_CLASSIFICATION_TEMPLATE,
                                        texts, labels)

    reference = probabilities(peft_adapter)
    assert all(abs(sum(p.values()) - 1) < 1e-6 and set(p) == set(labels) for p in reference)
    assert compare_label_probabilities(texts, probabilities(peft_adapter), reference).passed
    refused = compare_label_probabilities(texts, probabilities(scrambled_adapter), reference)
    assert not refused.passed, refused


def test_chat_parity_steps_on_real_adapters(base_model_dir, peft_adapter, scrambled_adapter):
    """PEFT's recorded path rebuilds its own reply; a different adapter's reply is no near-tie."""
    from training.scoring import generate_replies, load_model

    prompts = [[{"role": "user", "content": q}] for q in ("What is the color of snow?",
                                                          "Name a fruit.")]
    model, tokenizer = load_model(base_model_dir, peft_adapter)
    replies, steps = peft_greedy_steps(model, tokenizer, prompts, 16)
    assert replies == generate_replies(model, tokenizer, prompts, 16)
    for reply, path in zip(replies, steps):
        assert "".join(step[0][0] or "" for step in path).strip() == reply
        assert all(len(step) == 6 and step[0][1] >= max(lp for _, lp in step) for step in path)
        assert first_divergence(reply, path) is None
    assert compare_replies(prompts, replies, replies, 16, steps).passed
    other, _ = load_model(base_model_dir, scrambled_adapter)
    different = generate_replies(other, tokenizer, prompts, 16)
    refused = compare_replies(prompts, different, replies, 16, steps)
    assert not refused.passed, (different, replies)
    print(f"\nscrambled adapter: {refused.message('x@v1')}")


# -- the manager with fake engines ------------------------------------------------------------


def dataset(n: int = 20) -> bytes:
    return "".join(json.dumps({"text": f"sample text {i}", "label": "pos" if i % 2 else "neg"})
                   + "\n" for i in range(n)).encode()


@pytest.fixture
def training_file(platform, tenant):
    return store_file(platform, tenant, dataset(), "train.jsonl")


def events(platform, job_id):
    with platform.store.read() as session:
        rows, _ = store.list_events(session, job_id, limit=1000, oldest_first=True)
    return rows


def peft_greedy(base_model_dir, adapter_dir, conversations, max_tokens):
    """An independent PEFT reference (not training.scoring): what a faithful engine returns."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    if adapter_dir is not None:  # None: the base model
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    replies = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        replies.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return replies


def peft_first_token_probabilities(base_model_dir, adapter_dir, template, texts, labels):
    """An independent PEFT reference for labels with distinct first tokens: the next-token
    distribution after the prompt, normalised over the labels' first tokens (``adapter_dir``
    None: the base model's)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.prompts import classification_messages

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    if adapter_dir is not None:  # None: the base model
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    first = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
    assert len(set(first)) == len(labels)
    out = []
    for text in texts:
        prompt = tokenizer.apply_chat_template(classification_messages(template, text, labels),
                                               add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, -1], -1)[first]
        out.append(dict(zip(labels, (p / p.sum()).tolist())))
    return out


class FakeEngine:
    """A ParityEngine: faithful (PEFT), wrong (a fixed reply; sure of the label PEFT finds less
    likely) or unavailable."""

    def __init__(self, platform, tenant, base_model_dir, mode: str):
        self.platform, self.tenant, self.base = platform, tenant, base_model_dir
        self.mode = mode
        self.calls: list[tuple[str, str, list]] = []
        self.forgotten: list[str] = []
        self.state_seen: str | None = None
        self.readied = 0

    def greedy_replies(self, engine_name, adapter_path, conversations, max_tokens):
        self._called(engine_name, adapter_path, conversations)
        if self.mode == "wrong":
            return ["I am not the adapter you trained."] * len(conversations)
        return peft_greedy(self.base, self._local(adapter_path), conversations, max_tokens)

    def _local(self, adapter_path):
        """A real engine fetches the ``artifact:<key>`` it is given; so does this one."""
        key = parse_artifact_ref(adapter_path)
        assert key is not None, f"the engine was sent a local path {adapter_path!r}"
        return self.platform.artifacts.materialize_dir(key)

    def _called(self, engine_name, adapter_path, prompts):
        """Record the call; the version must be pending (not servable) while it is checked."""
        self.calls.append((engine_name, adapter_path, prompts))
        name, version = engine_name.split(".")[1], int(engine_name.rsplit(".v", 1)[1])
        with self.platform.store.read() as session:
            self.state_seen = registry.get_version(session, self.tenant, name, version).state
            with pytest.raises(NotFound):  # not servable while it is being checked
                registry.resolve(session, self.tenant, f"{name}@v{version}")
        if self.mode == "unavailable":
            raise EngineUnavailable("no engine was ready within 0 s")

    def ready(self):
        self.readied += 1
        if self.mode == "unavailable":
            raise EngineUnavailable("no engine was ready within 0 s")

    def label_probabilities(self, engine_name, adapter_path, template, texts, labels):
        self._called(engine_name, adapter_path, texts)
        faithful = peft_first_token_probabilities(self.base, self._local(adapter_path), template, texts,
                                                  labels)
        if self.mode == "wrong":
            return [{label: float(label == min(p, key=p.get)) for label in labels}
                    for p in faithful]
        return faithful

    def forget(self, engine_name):
        self.forgotten.append(engine_name)


class ScoringEngine(FakeEngine):
    """A FakeEngine that also scores jobs (:class:`training.jobs.engine_scoring.EngineScoring`):
    faithful PEFT probabilities; ``engine_name`` None is the base (the adapter disabled)."""

    configured = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scored: list[tuple[str | None, int]] = []
        self.checked: set[str] = set()

    def label_probabilities(self, engine_name, adapter_path, template, texts, labels):
        if engine_name is not None and engine_name not in self.checked:
            self.checked.add(engine_name)  # a version's first call: its parity check
            return super().label_probabilities(engine_name, adapter_path, template, texts,
                                               labels)
        if self.mode == "unavailable":
            raise EngineUnavailable("no engine was ready within 0 s")
        self.scored.append((engine_name, len(texts)))
        adapter = None if adapter_path is None else self._local(adapter_path)
        return peft_first_token_probabilities(self.base, adapter, template, texts, labels)


def run(platform, tenant, training_file, peft_adapter, engine, checks=False, **job):
    runner = ScriptedRunner(peft_adapter, steps=1, accuracy=job.pop("accuracy", 0.9),
                            checks=checks)
    created = create_job(platform, tenant, JobRequest(model=job.pop("model", "base"),
                         training_file=training_file.id, **job))
    status = JobManager(platform, runner=runner, poll_s=0.01, parity_engine=engine
                        ).run_job(created.id)
    with platform.store.read() as session:
        row = store.get_job(session, None, created.id)
        session.expunge(row)
    return status, row


def test_parity_pass_makes_the_pending_version_ready(platform, tenant, training_file,
                                                     peft_adapter, base_model_dir):
    engine = FakeEngine(platform, tenant, base_model_dir, "faithful")
    # checks=True: PEFT's replies come from the run (the job entrypoint's parity reference)
    status, job = run(platform, tenant, training_file, peft_adapter, engine, checks=True,
                      suffix="cls")
    assert status is JobStatus.SUCCEEDED and job.fine_tuned_model == "cls@v1", job.error

    assert engine.state_seen == "pending"
    [(engine_name, _path, texts)] = engine.calls
    assert engine_name == "acme.cls.v1"
    # a classifier is checked on what /v1/classify returns: label probabilities of up to 8
    # held-out texts (this hash split of 20 has 2)
    assert len(texts) == 2 and all(t.startswith("sample text") for t in texts)
    types = [e.type for e in events(platform, job.id)]
    assert types[-5:] == ["evaluated", "gate_decision", "parity_checked", "published",
                          "succeeded"]
    checked = next(e for e in events(platform, job.id) if e.type == "parity_checked")
    assert checked.data["passed"] and checked.data["prompts"] == 2
    assert checked.data["kind"] == "label_probabilities" and checked.data["tolerance"] == 0.1
    assert checked.data["largest_difference"] < 0.01  # float32 PEFT on both sides
    assert "label probabilities" in checked.message and "is servable" in checked.message
    assert checked.data["reference"] == "training run"
    with platform.store.read() as session:
        version = registry.get_version(session, tenant, "cls", 1)
        assert version.state == "ready" and version.metrics["parity"]["passed"]
        assert registry.resolve(session, tenant, "cls").version == 1  # first ready: champion


def test_parity_mismatch_fails_the_version_and_the_job(platform, tenant, training_file,
                                                       peft_adapter, base_model_dir):
    engine = FakeEngine(platform, tenant, base_model_dir, "wrong")
    # no checks from the run: the job manager computes PEFT's replies itself
    status, job = run(platform, tenant, training_file, peft_adapter, engine, suffix="cls")
    assert status is JobStatus.FAILED
    assert job.error["code"] == "parity_failed" and job.fine_tuned_model is None
    assert "parity check failed for cls@v1: held-out text 0" in job.error["message"]
    assert "more than 0.1" in job.error["message"]
    checked = next(e for e in events(platform, job.id) if e.type == "parity_checked")
    assert not checked.data["passed"] and checked.data["reference"] == "job manager"
    mismatch = checked.data["mismatch"]
    assert mismatch["index"] == 0 and mismatch["difference"] >= 0.5
    assert set(mismatch["engine"]) == set(mismatch["peft"]) == {"neg", "pos"}
    assert mismatch["prompt"].startswith("sample text")
    assert engine.forgotten == ["acme.cls.v1"]
    assert [e.type for e in events(platform, job.id)][-1] == "failed"
    with platform.store.read() as session:
        version = registry.get_version(session, tenant, "cls", 1)
        assert version.state == "failed" and job.result_version_id == version.id
        with pytest.raises(NotFound):
            registry.resolve(session, tenant, "cls@v1")
        with pytest.raises(NotFound, match="no champion"):
            registry.resolve(session, tenant, "cls")


def test_no_ready_engine_skips_parity_with_the_reason(platform, tenant, training_file,
                                                      peft_adapter, base_model_dir):
    engine = FakeEngine(platform, tenant, base_model_dir, "unavailable")
    status, job = run(platform, tenant, training_file, peft_adapter, engine, suffix="cls")
    assert status is JobStatus.SUCCEEDED and job.fine_tuned_model == "cls@v1"
    skipped = next(e for e in events(platform, job.id) if e.type == "parity_skipped")
    assert skipped.data == {"reason": "no engine was ready within 0 s"}
    assert "parity_checked" not in [e.type for e in events(platform, job.id)]
    assert engine.readied == 1 and engine.calls == []  # asked first: no PEFT reference made


def test_auto_promote_only_past_the_gate(platform, tenant, training_file, peft_adapter):
    status, _ = run(platform, tenant, training_file, peft_adapter, None, suffix="cls")
    assert status is JobStatus.SUCCEEDED
    # v2 reports accuracy 0.0 on the held-out split: worse than the champion on that split
    status, job = run(platform, tenant, training_file, peft_adapter, None, checks=True,
                      model="cls", auto_promote=True, accuracy=0.0)
    assert status is JobStatus.SUCCEEDED and job.fine_tuned_model == "cls@v2"
    scored = [e for e in events(platform, job.id) if e.type == "evaluated"][-1]
    assert scored.message.startswith("champion cls@v1 on the same held-out split: accuracy")
    gate = next(e for e in events(platform, job.id) if e.type == "gate_decision")
    champion_accuracy = gate.data["champion"]
    assert gate.data["champion_version"] == "cls@v1" and gate.data["candidate"] == 0.0
    assert gate.data["examples"] == 2
    if champion_accuracy > 0:
        assert not gate.data["passed"] and gate.data["reason"] == "worse_than_champion"
        note = [e for e in events(platform, job.id) if "was not promoted" in e.message]
        assert note and "POST /v1/adapters/cls/promote" in note[0].message
        assert "promoted" not in [e.type for e in events(platform, job.id)]
        with platform.store.read() as session:
            assert registry.resolve(session, tenant, "cls").version == 1
            v2 = registry.get_version(session, tenant, "cls", 2)
        assert v2.state == "ready" and v2.metrics["gate"]["passed"] is False
        assert v2.metrics["eval"]["champion"]["accuracy"] == champion_accuracy
    else:  # the untrained champion got nothing right either: a tie passes
        assert gate.data["passed"] and gate.data["reason"] == "ties_champion"


def test_chat_parity_stays_exact_greedy_text():
    from types import SimpleNamespace

    from training.jobs.parity import check_parity

    class Replies:
        def __init__(self, reply):
            self.reply = reply

        def greedy_replies(self, engine_name, adapter_path, conversations, max_tokens):
            assert max_tokens == 16
            return [self.reply] * len(conversations)

    chat = SimpleNamespace(config=SimpleNamespace(task="chat"))
    reference = {"kind": "greedy_text", "max_new_tokens": 16, "replies": ["Paris."],
                 "conversations": [[{"role": "user", "content": "Capital of France?"}]]}
    same = check_parity(chat, reference, Replies("Paris. "), "t.c.v1", "/p", None, [])
    assert same.passed and same.kind == "greedy_text" and same.reference == "training run"
    differs = check_parity(chat, reference, Replies("Paris!"), "t.c.v1", "/p", None, [])
    assert not differs.passed and differs.mismatch["engine"] == "Paris!"
    assert "the engine replied 'Paris!', PEFT replied 'Paris.'" in differs.message("c@v1")


def test_a_classification_job_is_evaluated_on_the_engine(platform, tenant, training_file,
                                                        peft_adapter, base_model_dir):
    engine = ScoringEngine(platform, tenant, base_model_dir, "faithful")
    status, job = run(platform, tenant, training_file, peft_adapter, engine, checks=True,
                      suffix="cls")
    assert status is JobStatus.SUCCEEDED, job.error
    assert not [e for e in events(platform, job.id) if e.type == "evaluated"][:-1]  # run: none
    types = [e.type for e in events(platform, job.id)]
    assert types[-5:] == ["parity_checked", "evaluated", "gate_decision", "published",
                          "succeeded"]
    # the held-out split (2 texts of this hash split) scored for the adapter and the base
    assert engine.scored == [("acme.cls.v1", 2), (None, 2)]
    evaluated = next(e for e in events(platform, job.id) if e.type == "evaluated")
    assert "on the engine" in evaluated.message
    with platform.store.read() as session:
        v1 = registry.get_version(session, tenant, "cls", 1)
    assert v1.metrics["eval"]["adapter"]["scorer"] == "engine"
    assert v1.metrics["eval"]["adapter"]["examples"] == 2
    assert v1.metrics["gate"]["candidate"] == v1.metrics["eval"]["adapter"]["accuracy"]

    # v2 is compared with the champion v1, scored on the engine on v2's split too
    engine.scored.clear()
    status, job = run(platform, tenant, training_file, peft_adapter, engine, checks=True,
                      model="cls")
    assert status is JobStatus.SUCCEEDED, job.error
    # the candidate and the champion; the base only without a champion
    assert engine.scored == [("acme.cls.v2", 2), ("acme.cls.v1", 2)]
    gate = next(e for e in events(platform, job.id) if e.type == "gate_decision").data
    assert gate["champion_version"] == "cls@v1" and gate["examples"] == 2
    with platform.store.read() as session:
        v2 = registry.get_version(session, tenant, "cls", 2)
    # the same adapter, scored the same way: the champion's accuracy is the candidate's
    assert v2.metrics["eval"]["champion"]["accuracy"] == v2.metrics["eval"]["adapter"]["accuracy"]
    assert gate["reason"] == "ties_champion"


def test_an_engine_gone_before_scoring_leaves_it_to_peft(platform, tenant, training_file,
                                                         peft_adapter, base_model_dir):
    engine = ScoringEngine(platform, tenant, base_model_dir, "unavailable")
    status, job = run(platform, tenant, training_file, peft_adapter, engine, suffix="cls")
    assert status is JobStatus.SUCCEEDED, job.error
    messages = [e.message for e in events(platform, job.id)]
    assert any("PEFT scores it in this process instead" in m for m in messages), messages
    with platform.store.read() as session:
        v1 = registry.get_version(session, tenant, "cls", 1)
    assert v1.metrics["eval"]["adapter"]["scorer"] == "peft"
    assert v1.metrics["eval"]["base"]["examples"] == 2
