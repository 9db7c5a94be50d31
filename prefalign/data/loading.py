"""Read a data source into validated examples under the bad-row policy, and into preference pairs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from prefalign.config.schema import DataConfig
from prefalign.data.errors import BadRowTally, DataError
from prefalign.data.examples import (
    Demonstration,
    Example,
    PreferencePair,
    RankedList,
    RatedPrompt,
    TripleExample,
    UnpairedExample,
)
from prefalign.data.formats import PARSERS, detect_format, parse_rated
from prefalign.data.pairs import pairs_from_ranked, pairs_from_rated
from prefalign.data.readers import RawRecord, read_records

DETECT_ROWS = 64
NO_PREFERENCE = "SFT data (prompt/completion or messages) holds no preference; train it with `prefalign sft`"  # rows whose keys vote on the format when data.format is auto


@dataclass
class LoadedExamples:
    examples: list[Example]
    format: str
    tally: BadRowTally
    format_note: str = ""  # how the format was decided, when it was detected


def detect_from_rows(records: list[RawRecord]) -> tuple[str, str]:
    """The format most of the first rows have (ties: the earliest row's), and a note naming the rows that
    decided it and those that disagree, so one odd first row cannot decide a whole file."""
    votes: dict[str, list[RawRecord]] = {}
    first_error = None
    for record in records:
        try:
            votes.setdefault(detect_format(record.fields, record.ref), []).append(record)
        except DataError as err:
            first_error = first_error or err
    if not votes:
        raise first_error
    fmt = max(votes, key=lambda f: len(votes[f]))
    note = f"{fmt} (the keys of {len(votes[fmt])} of the first {len(records)} rows, from {votes[fmt][0].ref})"
    others = [f"{f} at {rows[0].ref}" for f, rows in votes.items() if f != fmt]
    if others:
        note += "; other rows look like " + ", ".join(others) + " and are read as " + fmt
    return fmt, note


def load_examples(source: str, cfg: DataConfig) -> LoadedExamples:
    """Parse every record of `source` in the declared (or detected) format. A bad row raises its DataError,
    or, with `on_bad_row: skip`, is counted in the tally and left out."""
    fmt = None if cfg.format == "auto" else cfg.format
    tally, examples, note = BadRowTally(), [], ""
    records = read_records(source, cfg.split)
    if fmt is None:
        head = list(itertools.islice(records, DETECT_ROWS if cfg.limit is None else min(DETECT_ROWS, cfg.limit)))
        if not head:
            raise DataError(source, None, "no usable rows", "empty")
        fmt, note = detect_from_rows(head)
        records = itertools.chain(head, records)
    for record in records:
        if cfg.limit is not None and tally.total_rows >= cfg.limit:
            break
        tally.total_rows += 1
        try:
            if fmt == "rated":
                examples.append(parse_rated(record.fields, record.ref, cfg.pairs.score_key))
            else:
                examples.append(PARSERS[fmt](record.fields, record.ref))
        except DataError as err:
            if cfg.on_bad_row == "error" or err.kind in ("bad_json", "unknown_format"):
                raise
            tally.add(err)
    if not examples:
        raise DataError(source, None, "no usable rows" + (f" ({tally.skipped} skipped)" if tally.skipped else ""), "empty")
    return LoadedExamples(examples, fmt, tally, note)


def to_pairs(loaded: LoadedExamples, cfg: DataConfig, seed: int = 0) -> list[PreferencePair]:
    """Preference pairs from any pairwise-usable format: pairs as they are, rated and ranked by `cfg.pairs`."""
    pairs: list[PreferencePair] = []
    for ex in loaded.examples:
        try:
            if isinstance(ex, PreferencePair):
                pairs.append(ex)
            elif isinstance(ex, TripleExample):
                pairs.append(PreferencePair(ex.prompt, ex.chosen, ex.rejected, ex.ref))
            elif isinstance(ex, RatedPrompt):
                pairs.extend(pairs_from_rated(ex, cfg.pairs, seed))
            elif isinstance(ex, RankedList):
                pairs.extend(pairs_from_ranked(ex, cfg.pairs, seed))
            elif isinstance(ex, UnpairedExample):
                raise DataError(ex.ref, None, "unpaired examples have no pair; use a loss for unpaired labels (KTO)", "unpaired")
            elif isinstance(ex, Demonstration):
                raise DataError(ex.ref, None, NO_PREFERENCE, "unpaired")
        except DataError as err:
            if cfg.on_bad_row == "error" or err.kind == "unpaired":
                raise
            loaded.tally.add(err)
    return pairs


def to_lists(loaded: LoadedExamples, cfg: DataConfig) -> list[RankedList]:
    """Ranked lists from any ordered format: ranked lists as they are, rated completions sorted by score
    (ties keep their order), pairs as lists of two, triples as (gold, chosen, rejected)."""
    lists: list[RankedList] = []
    for ex in loaded.examples:
        if isinstance(ex, RankedList):
            lists.append(ex)
        elif isinstance(ex, RatedPrompt):
            order = sorted(range(len(ex.scores)), key=lambda i: -ex.scores[i])
            lists.append(RankedList(ex.prompt, [ex.completions[i] for i in order], ex.ref, [ex.scores[i] for i in order]))
        elif isinstance(ex, TripleExample):
            lists.append(RankedList(ex.prompt, [ex.gold, ex.chosen, ex.rejected], ex.ref))
        elif isinstance(ex, PreferencePair):
            if ex.rejected_prompt is not None:
                raise DataError(ex.ref, "rejected_prompt", "a joint pair has two prompts, so it is no ranked list; "
                                "use a pairwise loss (dove, dpo, ...)", "joint_pair")
            lists.append(RankedList(ex.prompt, [ex.chosen, ex.rejected], ex.ref))
        elif isinstance(ex, Demonstration):
            raise DataError(ex.ref, None, NO_PREFERENCE, "unpaired")
        else:
            raise DataError(ex.ref, None, "unpaired examples have no ranking; use a loss for unpaired labels", "unpaired")
    return lists


def to_unpaired(loaded: LoadedExamples, cfg: DataConfig, seed: int = 0) -> list[UnpairedExample]:
    """Labelled completions: unpaired examples as they are; each pair (from pairs, rated or ranked data)
    gives its chosen completion as desirable and its rejected one as undesirable."""
    out: list[UnpairedExample] = []
    for ex in loaded.examples:
        if isinstance(ex, UnpairedExample):
            out.append(ex)
    pairs = to_pairs(LoadedExamples([e for e in loaded.examples if not isinstance(e, UnpairedExample)],
                                    loaded.format, loaded.tally), cfg, seed)
    for p in pairs:
        rejected_prompt = p.prompt if p.rejected_prompt is None else p.rejected_prompt
        out += [UnpairedExample(p.prompt, p.chosen, True, p.ref),
                UnpairedExample(rejected_prompt, p.rejected, False, p.ref)]
    return out


def to_demonstrations(loaded: LoadedExamples, every: bool = False) -> list[Demonstration]:
    """Completions to imitate. SFT data as it is; from preference data the preferred completion (a pair's
    chosen, a rated prompt's best, a ranked list's first, an unpaired example labelled desirable, a triple's
    gold). With `every`, each completion instead, scored for conditional training: a pair's chosen 1 and
    rejected 0, rated completions by their score, a ranked list by its scores or its order, unpaired labels
    as 1/0, a triple's gold, chosen and rejected as 2, 1, 0."""
    out: list[Demonstration] = []
    for ex in loaded.examples:
        if isinstance(ex, Demonstration):
            out.append(ex)
            continue
        scored = _scored_completions(ex)
        if isinstance(ex, UnpairedExample) and not (every or ex.label):
            continue  # an undesirable completion is nothing to imitate
        if every:
            out += [Demonstration(prompt, text, ex.ref, score) for prompt, text, score in scored]
        else:
            prompt, text, _ = max(scored, key=lambda c: c[2])  # the first of equal bests
            out.append(Demonstration(prompt, text, ex.ref))
    return out


def _scored_completions(ex: Example) -> list[tuple[object, object, float]]:
    """(prompt, completion, score) for each completion of a preference example, higher scores preferred."""
    if isinstance(ex, PreferencePair):
        rejected_prompt = ex.prompt if ex.rejected_prompt is None else ex.rejected_prompt
        return [(ex.prompt, ex.chosen, 1.0), (rejected_prompt, ex.rejected, 0.0)]
    if isinstance(ex, RatedPrompt):
        return [(ex.prompt, c, s) for c, s in zip(ex.completions, ex.scores)]
    if isinstance(ex, RankedList):
        scores = ex.scores or [-float(i) for i in range(len(ex.responses))]
        return [(ex.prompt, r, s) for r, s in zip(ex.responses, scores)]
    if isinstance(ex, UnpairedExample):
        return [(ex.prompt, ex.completion, float(ex.label))]
    return [(ex.prompt, ex.gold, 2.0), (ex.prompt, ex.chosen, 1.0), (ex.prompt, ex.rejected, 0.0)]


def read_pairs(source: str) -> list[PreferencePair]:
    """The pairs of `source`, exactly one per row, for commands that keep, drop or annotate whole rows."""
    cfg = DataConfig(train=source, eval_fraction=0.0)
    pairs = to_pairs(load_examples(source, cfg), cfg)
    rows = [p.ref.row for p in pairs]
    if len(set(rows)) != len(rows):
        raise ValueError(f"{source}: some rows hold several pairs (rated or ranked data); this command keeps, drops "
                         "or annotates whole rows, so give it one pair per row (e.g. pairs built with "
                         "data.pairs.rule first)")
    return pairs
