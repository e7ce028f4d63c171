"""Parity check before a version is servable: the serving engine must run the adapter the way
PEFT does, measured on what serving returns:

- chat adapters: greedy replies to a few held-out prompts must equal PEFT's (exact text);
- classification adapters: ``/v1/classify`` returns per-label probabilities from first-token
  scoring (:mod:`serving.classify`), so those are compared: for every held-out text, each
  label's probability through the engine must be within ``LABEL_TOLERANCE`` of the same
  computation in PEFT. Exact greedy labels would refuse a correct adapter on a near-tie (the
  engine computes in lower precision than PEFT's float32); a different adapter moves the
  probabilities far more than the tolerance.

A mismatch means the engine does not run the adapter the way training did (an unsupported
module or rank, a different chat template, a conversion bug); such a version is marked FAILED
and never served. The engine side is a small :class:`ParityEngine` protocol; the real one,
:class:`GatewayEngine`, runs the requests on the gateway's engine pool (the same path serving
uses: load the adapter under its versioned engine name, then chat completions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from services.store.models import AdapterTask
from training.datasets import Message

PROMPTS = 3
"""Chat: held-out prompts whose greedy replies are compared."""
MAX_NEW_TOKENS = 16
LABEL_PROMPTS = 8
"""Classification: held-out texts whose label probabilities are compared (one cheap engine
request each)."""
LABEL_TOLERANCE = 0.1
"""Largest allowed difference of one label's probability between the engine and PEFT. Precision
alone moved them by up to 0.04 on the sentiment adapters of the loop test (docs/loop.md)."""
GREEDY_TEXT, LABEL_PROBABILITIES = "greedy_text", "label_probabilities"


class EngineUnavailable(Exception):
    """No engine can run the check (no serving in this process, or none ready): skip it."""


class ParityEngine(Protocol):
    def greedy_replies(self, engine_name: str, adapter_path: str,
                       conversations: list[list[Message]], max_tokens: int) -> list[str]:
        """Greedy (temperature 0) chat replies with the adapter loaded under ``engine_name``.
        Raises EngineUnavailable when no engine can run them; other errors are real failures."""
        ...

    def label_probabilities(self, engine_name: str, adapter_path: str, template: str,
                            texts: list[str], labels: list[str]) -> list[dict[str, float]]:
        """Per-label probabilities of each text as ``/v1/classify`` computes them with the
        adapter loaded under ``engine_name``. Raises EngineUnavailable like greedy_replies."""
        ...

    def forget(self, engine_name: str) -> None:
        """Unload ``engine_name`` (a version that failed the check is never served)."""
        ...


@dataclass(frozen=True)
class ParityResult:
    """The typed content of a ``parity_checked`` event."""

    passed: bool
    prompts: int
    max_new_tokens: int
    mismatch: dict[str, Any] | None  # index, prompt, engine, peft of the first differing reply
    reference: str = "training run"  # where PEFT's replies were computed ("job manager": here)
    kind: str = GREEDY_TEXT  # what was compared: greedy_text or label_probabilities
    tolerance: float | None = None  # label_probabilities: the allowed difference
    largest_difference: float | None = None  # label_probabilities: the largest one seen

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, ref: str) -> str:
        if self.kind == LABEL_PROBABILITIES:
            return self._label_message(ref)
        if self.passed:
            return (f"parity check passed: the engine's greedy replies to {self.prompts} held-out "
                    f"prompts equal PEFT's ({self.max_new_tokens} new tokens); {ref} is servable")
        m = self.mismatch or {}
        return (f"parity check failed for {ref}: held-out prompt {m.get('index')} "
                f"({_short(m.get('prompt'))}): the engine replied {m.get('engine')!r}, PEFT "
                f"replied {m.get('peft')!r}; the version is kept as failed and never served")


    def _label_message(self, ref: str) -> str:
        if self.passed:
            return (f"parity check passed: the engine's label probabilities for {self.prompts} "
                    f"held-out texts are within {self.tolerance:g} of PEFT's (largest "
                    f"difference {self.largest_difference:.3f}); {ref} is servable")
        m = self.mismatch or {}
        if m.get("difference") is None:  # the engine refused the adapter
            return (f"parity check failed for {ref}: the engine could not score the labels "
                    f"({m.get('engine')}); the version is kept as failed and never served")
        return (f"parity check failed for {ref}: held-out text {m.get('index')} "
                f"({_short(m.get('prompt'))}): the engine gave {_rounded(m.get('engine'))}, PEFT "
                f"gave {_rounded(m.get('peft'))} (a label differs by {m['difference']:.3f}, more "
                f"than {self.tolerance:g}); the version is kept as failed and never served")


def _rounded(probabilities: Any) -> str:
    if not isinstance(probabilities, dict):
        return repr(probabilities)
    return "{" + ", ".join(f"{k}: {v:.3f}" for k, v in probabilities.items()) + "}"


def _short(messages: Any, width: int = 80) -> str:
    if isinstance(messages, str):
        messages = [{"content": messages}]
    text = " | ".join(str(m.get("content", "")) for m in messages or [])
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def compare_replies(conversations: list[list[Message]], engine: list[str], peft: list[str],
                    max_new_tokens: int = MAX_NEW_TOKENS) -> ParityResult:
    """Pure: the first prompt whose replies differ (surrounding whitespace aside), if any."""
    if len(engine) != len(peft) or len(peft) != len(conversations):
        raise ValueError(f"{len(conversations)} prompts, {len(engine)} engine replies, "
                         f"{len(peft)} PEFT replies")
    for i, (conversation, e, p) in enumerate(zip(conversations, engine, peft)):
        if e.strip() != p.strip():
            return ParityResult(False, len(peft), max_new_tokens, {
                "index": i, "prompt": conversation, "engine": e, "peft": p})
    return ParityResult(True, len(peft), max_new_tokens, None)


def compare_label_probabilities(texts: list[str], engine: list[dict[str, float]],
                                peft: list[dict[str, float]],
                                tolerance: float = LABEL_TOLERANCE) -> ParityResult:
    """Pure: passes when every label's probability differs by at most ``tolerance`` between the
    engine and PEFT on every text; else names the first text that differs more."""
    if len(engine) != len(peft) or len(peft) != len(texts):
        raise ValueError(f"{len(texts)} texts, {len(engine)} engine results, {len(peft)} PEFT "
                         "results")
    largest = 0.0
    for i, (text, e, p) in enumerate(zip(texts, engine, peft)):
        if set(e) != set(p):
            difference = 1.0  # different label sets: nothing comparable
        else:
            difference = max((abs(e[label] - p[label]) for label in p), default=0.0)
        largest = max(largest, difference)
        if difference > tolerance:
            return ParityResult(False, len(peft), 0, {
                "index": i, "prompt": text, "engine": e, "peft": p, "difference": difference},
                kind=LABEL_PROBABILITIES, tolerance=tolerance, largest_difference=largest)
    return ParityResult(True, len(peft), 0, None, kind=LABEL_PROBABILITIES, tolerance=tolerance,
                        largest_difference=largest)


# -- PEFT's side and the check (the training run computes the reference; see entrypoint) -------


def _render(tokenizer: Any, messages: list[dict[str, str]], **flags: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, **flags)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def peft_label_probabilities(model: Any, tokenizer: Any, template: str, texts: list[str],
                             labels: list[str]) -> list[dict[str, float]]:
    """Per-label probabilities the way ``/v1/classify`` computes them on the engine (first-token
    scoring over the labels' token trie, :mod:`serving.classify`), from PEFT's logits."""
    import torch

    from services.label_scoring import label_probabilities, plan_scoring
    from services.prompts import classification_messages

    probe = classification_messages(template, "x", labels)
    prompt = _render(tokenizer, probe, add_generation_prompt=True)
    label_tokens = {}
    for label in labels:
        reply = probe + [{"role": "assistant", "content": label}]
        open_ = _render(tokenizer, reply, continue_final_message=True)
        closed = _render(tokenizer, reply)
        label_tokens[label] = open_[len(prompt):] + [closed[len(open_)]]
    plan = plan_scoring(label_tokens)
    device = next(model.parameters()).device
    results = []
    with torch.no_grad():
        for text in texts:
            ids = _render(tokenizer, classification_messages(template, text, labels),
                          add_generation_prompt=True)
            observations = {}
            for point in plan.branch_points:
                logits = model(input_ids=torch.tensor([ids + list(point.prefix)],
                                                      device=device)).logits[0, -1]
                logprobs = torch.log_softmax(logits.float(), -1)
                observations[point.prefix] = {tok: float(logprobs[tok])
                                              for tok in point.children}
            probabilities = label_probabilities(plan, observations)
            results.append({label: probabilities[label] for label in labels})
    return results


def peft_reference(candidate: Any, template: str | None, labels: list[str]
                   ) -> dict[str, Any] | None:
    """PEFT's side of the check on the candidate's first held-out examples (None: there are
    none): label probabilities for classification, greedy replies for chat."""
    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
    from training.jobs.candidate import prompt_of

    if candidate.config.task == AdapterTask.CLASSIFICATION:
        examples = candidate.examples[:LABEL_PROMPTS]
        if not examples:
            return None
        template = template or DEFAULT_CLASSIFICATION_TEMPLATE
        texts = [e.text for e in examples]
        model, tokenizer = candidate.model()
        return {"kind": LABEL_PROBABILITIES, "texts": texts, "template": template,
                "labels": labels,
                "probabilities": peft_label_probabilities(model, tokenizer, template, texts,
                                                          labels)}
    examples = candidate.examples[:PROMPTS]
    if not examples:
        return None
    from training.scoring import generate_replies

    conversations = [prompt_of(e, template or "", labels) for e in examples]
    model, tokenizer = candidate.model()
    return {"kind": GREEDY_TEXT, "conversations": conversations,
            "max_new_tokens": MAX_NEW_TOKENS,
            "replies": generate_replies(model, tokenizer, conversations, MAX_NEW_TOKENS)}


def _usable(reference: dict[str, Any] | None, classification: bool, template: str,
            labels: list[str]) -> bool:
    """Whether the run's reference was computed for this check (an older run wrote none, or
    greedy replies for a classifier)."""
    if not reference:
        return False
    if classification:
        return (reference.get("kind") == LABEL_PROBABILITIES
                and reference.get("template") == template
                and list(reference.get("labels") or []) == labels)
    return (reference.get("kind", GREEDY_TEXT) == GREEDY_TEXT
            and reference.get("max_new_tokens") == MAX_NEW_TOKENS)


def check_parity(candidate: Any, reference: dict[str, Any] | None, engine: ParityEngine,
                 engine_name: str, adapter_path: str, template: str | None, labels: list[str]
                 ) -> ParityResult | str:
    """Run the check for the candidate on ``engine``: the result, or the reason it was skipped
    (a string). ``reference`` is the training run's :func:`peft_reference`; when it is missing
    or was made for another check, PEFT runs here (``reference="job manager"``)."""
    from services.errors import Unavailable
    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE

    classification = candidate.config.task == AdapterTask.CLASSIFICATION
    if classification:
        template = template or DEFAULT_CLASSIFICATION_TEMPLATE
    where = "training run"
    if not _usable(reference, classification, template or "", labels):
        reference, where = peft_reference(candidate, template, labels), "job manager"
    if reference is None:
        return "no held-out or training examples to build prompts from"
    kind = LABEL_PROBABILITIES if classification else GREEDY_TEXT
    try:
        if classification:
            assert template is not None  # defaulted above
            served_labels = engine.label_probabilities(engine_name, adapter_path, template,
                                                       reference["texts"], labels)
        else:
            served = engine.greedy_replies(engine_name, adapter_path,
                                           reference["conversations"], MAX_NEW_TOKENS)
    except (EngineUnavailable, Unavailable) as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - the engine refused the adapter: not servable
        return ParityResult(False, len(reference.get("texts") or reference["conversations"]),
                            0 if classification else MAX_NEW_TOKENS, {
                                "index": None, "prompt": None, "engine": f"error: {exc}",
                                "peft": None}, where, kind,
                            LABEL_TOLERANCE if classification else None)
    if classification:
        result = compare_label_probabilities(reference["texts"], served_labels,
                                             reference["probabilities"])
    else:
        result = compare_replies(reference["conversations"], served, reference["replies"],
                                 MAX_NEW_TOKENS)
    return replace(result, reference=where)
