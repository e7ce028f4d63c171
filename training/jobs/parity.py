"""Parity check before a version is servable: the serving engine must run the adapter the way
PEFT does, measured on what serving returns:

- chat adapters: greedy replies to a few held-out prompts must equal PEFT's, except at a
  near-tie: where the texts first part, PEFT's own log-probability (teacher-forced on the shared
  prefix, recorded with its reply) of the token the engine took must be within
  ``GREEDY_TIE_MARGIN`` of PEFT's top token. Batching and precision differ between the engine and
  PEFT's float32, so a near-tie can flip the greedy path of a correct adapter; a different
  adapter prefers another token by far more;
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
GREEDY_TIE_MARGIN = 0.4
"""Chat: the largest accepted gap (nats) between PEFT's log-probability of its own greedy token
and of the engine's token where the replies first part. It is the allowance of
``LABEL_TOLERANCE`` in log-odds: a 0.1 probability move at a 50/50 tie is ln(0.6/0.4) = 0.405;
a different adapter (random LoRA weights, a wrong base) parts by several nats."""
ALTERNATIVES = 5
"""Chat: PEFT's most likely other tokens recorded at each step of its greedy reply, so the
server judges a divergence without re-running PEFT."""
GREEDY_TEXT, LABEL_PROBABILITIES = "greedy_text", "label_probabilities"


class EngineUnavailable(Exception):
    """No engine can run the check (no serving in this process, or none ready): skip it."""


class ParityEngine(Protocol):
    def ready(self) -> None:
        """Return once an engine can run the check; raise EngineUnavailable when none can
        (asked before PEFT computes a reference here, which costs seconds)."""
        ...

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
    # the allowed difference: of a label probability, or of PEFT's log-probabilities at a greedy
    # near-tie (nats; None: the reference had no alternatives, so the text had to be equal)
    tolerance: float | None = None
    largest_difference: float | None = None  # the largest one seen (and accepted, if passed)
    near_ties: int = 0  # greedy_text: prompts whose replies part at an accepted near-tie

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, ref: str) -> str:
        if self.kind == LABEL_PROBABILITIES:
            return self._label_message(ref)
        if self.passed:
            ties = "" if not self.near_ties else (
                f", {self.near_ties} of them up to a near-tie (PEFT's log-probabilities differ by "
                f"at most {self.largest_difference:.3f} where they part, allowed "
                f"{self.tolerance:g})")
            return (f"parity check passed: the engine's greedy replies to {self.prompts} held-out "
                    f"prompts equal PEFT's ({self.max_new_tokens} new tokens){ties}; {ref} is "
                    "servable")
        m = self.mismatch or {}
        return (f"parity check failed for {ref}: held-out prompt {m.get('index')} "
                f"({_short(m.get('prompt'))}): the engine replied {m.get('engine')!r}, PEFT "
                f"replied {m.get('peft')!r}{_divergence(m, self.tolerance)}; the version is kept "
                "as failed and never served")

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


def _divergence(mismatch: dict[str, Any], margin: float | None) -> str:
    """Why a differing reply is not a near-tie (empty without PEFT's alternatives)."""
    if margin is None or "step" not in mismatch:
        return ""
    where = f" (they part at new token {mismatch['step']}"
    if mismatch.get("gap") is not None:
        return (f"{where}, where PEFT's log-probability of the engine's token is "
                f"{mismatch['gap']:.3f} below its own: more than the near-tie margin {margin:g})")
    if mismatch.get("gap_at_least") is not None:
        return (f"{where}, where the engine's token is not among PEFT's {ALTERNATIVES} most "
                f"likely alternatives: at least {mismatch['gap_at_least']:.3f} below PEFT's own, "
                f"more than the near-tie margin {margin:g})")
    return f"{where}, past the end of PEFT's recorded reply: no near-tie to judge)"


def _rounded(probabilities: Any) -> str:
    if not isinstance(probabilities, dict):
        return repr(probabilities)
    return "{" + ", ".join(f"{k}: {v:.3f}" for k, v in probabilities.items()) + "}"


def _short(messages: Any, width: int = 80) -> str:
    if isinstance(messages, str):
        messages = [{"content": messages}]
    text = " | ".join(str(m.get("content", "")) for m in messages or [])
    return repr(text if len(text) <= width else text[: width - 3] + "...")


Step = list[tuple[str | None, float]]
"""One new token of PEFT's greedy reply: (text piece, log-probability) of its own token first,
then of its most likely alternatives; piece None: a special token that ends the reply."""


@dataclass(frozen=True)
class Divergence:
    """Where an engine reply first parts from PEFT's greedy path (see :func:`first_divergence`)."""

    step: int  # the new token at which they part
    gap: float | None  # PEFT's own log-prob minus that of the engine's token (None: not recorded)
    gap_at_least: float | None  # when gap is None: PEFT's own minus its least likely alternative


def _consistent(engine: str, said: str, piece: str | None) -> bool:
    """Whether PEFT's reply so far plus ``piece`` agrees with the engine's (stripped) reply."""
    if piece is None:  # the reply ends here
        return said.strip() == engine
    return engine.startswith((said + piece).strip())


def first_divergence(engine: str, steps: list[Step]) -> Divergence | None:
    """Pure: the first new token where ``engine``'s reply leaves PEFT's greedy path ``steps``
    (None: it never does, i.e. the texts agree), with PEFT's log-probability gap there between
    its own token and the best recorded alternative that continues the engine's text."""
    engine, said = engine.strip(), ""
    for k, step in enumerate(steps):
        (own, own_logprob), others = step[0], step[1:]
        if _consistent(engine, said, own):
            if own is None:
                return None
            said += own
            continue
        matching = [lp for piece, lp in others if _consistent(engine, said, piece)]
        if matching:
            return Divergence(k, own_logprob - max(matching), None)
        least = min((lp for _, lp in others), default=None)
        return Divergence(k, None, None if least is None else own_logprob - least)
    if said.strip() == engine:
        return None
    return Divergence(len(steps), None, None)  # the engine's text goes on past PEFT's tokens


def compare_replies(conversations: list[list[Message]], engine: list[str], peft: list[str],
                    max_new_tokens: int = MAX_NEW_TOKENS, steps: list[list[Step]] | None = None,
                    margin: float = GREEDY_TIE_MARGIN) -> ParityResult:
    """Pure: passes when every reply equals PEFT's (surrounding whitespace aside) or, given
    PEFT's ``steps`` (:func:`peft_greedy_steps`), parts from it at a near-tie: a gap of at most
    ``margin`` (:func:`first_divergence`); else names the first prompt that differs more."""
    if len(engine) != len(peft) or len(peft) != len(conversations) or (
            steps is not None and len(steps) != len(peft)):
        raise ValueError(f"{len(conversations)} prompts, {len(engine)} engine replies, "
                         f"{len(peft)} PEFT replies, {len(steps or [])} PEFT steps")
    tolerance = None if steps is None else margin
    largest, ties = 0.0, 0
    for i, (conversation, e, p) in enumerate(zip(conversations, engine, peft)):
        if e.strip() == p.strip():
            continue
        mismatch: dict[str, Any] = {"index": i, "prompt": conversation, "engine": e, "peft": p}
        if steps is not None:
            divergence = first_divergence(e, steps[i])
            if divergence is None:  # equal up to PEFT's own stripping
                continue
            if divergence.gap is not None and divergence.gap <= margin:
                largest, ties = max(largest, divergence.gap), ties + 1
                continue
            mismatch.update(asdict(divergence))
        return ParityResult(False, len(peft), max_new_tokens, mismatch, tolerance=tolerance,
                            largest_difference=largest, near_ties=ties)
    return ParityResult(True, len(peft), max_new_tokens, None, tolerance=tolerance,
                        largest_difference=None if steps is None else largest, near_ties=ties)


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


def peft_greedy_steps(model: Any, tokenizer: Any, conversations: list[list[Message]],
                      max_new_tokens: int, alternatives: int = ALTERNATIVES
                      ) -> tuple[list[str], list[list[Step]]]:
    """PEFT's greedy replies (as :func:`training.scoring.generate_replies` returns them) and, for
    each, every new token's :data:`Step`: its own and its ``alternatives`` most likely other
    tokens' log-probabilities (float32, conditioned on its own reply so far)."""
    import torch

    from training.scoring import greedy_generate

    ends = set(tokenizer.all_special_ids)
    replies, all_steps = [], []
    with torch.no_grad():
        for messages in conversations:
            start, out = greedy_generate(model, tokenizer, messages, max_new_tokens,
                                         output_logits=True, return_dict_in_generate=True)
            new = out.sequences[0, start:].tolist()
            steps: list[Step] = []
            for k, logits in enumerate(out.logits):
                logprobs = torch.log_softmax(logits[0].float(), -1)
                said = tokenizer.decode(new[:k], skip_special_tokens=True)
                top = [t for t in torch.topk(logprobs, alternatives + 1).indices.tolist()
                       if t != new[k]][:alternatives]

                def piece(token: int, k: int = k, said: str = said) -> str | None:
                    if token in ends:
                        return None
                    return tokenizer.decode(new[:k] + [token],
                                            skip_special_tokens=True)[len(said):]

                steps.append([(piece(t), float(logprobs[t])) for t in [new[k], *top]])
            replies.append(tokenizer.decode(new, skip_special_tokens=True).strip())
            all_steps.append(steps)
    return replies, all_steps


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
    conversations = [prompt_of(e, template or "", labels) for e in examples]
    model, tokenizer = candidate.model()
    replies, steps = peft_greedy_steps(model, tokenizer, conversations, MAX_NEW_TOKENS)
    return {"kind": GREEDY_TEXT, "conversations": conversations,
            "max_new_tokens": MAX_NEW_TOKENS, "replies": replies, "steps": steps}


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
        try:
            engine.ready()  # no engine: skip now instead of scoring PEFT for nothing
        except (EngineUnavailable, Unavailable) as exc:
            return str(exc)
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
                                 MAX_NEW_TOKENS, reference.get("steps"))
    return replace(result, reference=where)
