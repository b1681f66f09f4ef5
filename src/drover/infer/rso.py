"""RSO: statistical rejection sampling of preference pairs from the optimal policy.

Liu et al. 2023, "Statistical Rejection Sampling Improves Preference Optimization"
(arXiv 2309.06657, Algorithm 1). DPO and SLiC fit the KL-regularised optimal policy

    pi_r(y|x) = pi_sft(y|x) * exp(r(x, y) / beta) / Z(x)

but the usual pairs come from pi_sft (or from elsewhere), not from pi_r. RSO draws the
pairs from (an estimate of) pi_r instead: sample N candidates from pi_sft, score them
with the reward model, then rejection-sample k of them. With a uniform proposal over
the candidate pool and M = the highest reward still in the pool, candidate y_i is
accepted with probability exp((r_i - M) / beta) (<= 1, so M is the envelope); accepted
candidates leave the pool and M is recomputed, until k are accepted or the pool is
empty. Each accepted draw is therefore distributed as softmax(r / beta) over the
remaining pool, which is pi_r restricted to the samples from pi_sft.

Why beta matters: as beta -> 0 only the top rewards survive (best-of-n pairs, greedy
on the reward model); as beta -> infinity every candidate is accepted (uniform over
the pool, i.e. plain samples from pi_sft, SLiC's sampling). Use the beta of the
DPO/SLiC run that trains on the pairs.

Pairs follow the paper's "first-round ranking" (its best setting, Sec. 5.2 / Table 2):
the accepted samples, in the order they were accepted, are paired (y1, y2), (y3, y4),
... and each pair is labelled by the reward model (higher reward = chosen; ties give no
pair). "tournament" continues with the winners until one is left (k - 1 pairs, biased
toward high rewards, as SLiC); "all" keeps the k samples in one record (every pair). The paper's listing scans the
pool in a fixed order within a round; here the proposal is a uniform random draw, so
each acceptance is exactly softmax over the pool rather than biased toward the order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from drover.records import JsonlAppender, Ranked, Response

PAIRINGS = ("first-round", "tournament", "all")


def rejection_sample(rewards: Sequence[float], k: int, beta: float, rng: random.Random) -> list[int]:
    """Indices of up to k candidates accepted by RSO's rejection sampler, in acceptance order.

    Pure given `rng`. k larger than the pool is clipped (the whole pool is returned, in
    a pi_r-weighted order).
    """
    if beta <= 0 or not math.isfinite(beta):
        raise ValueError(f"rso: beta must be a positive finite number, got {beta}")
    if any(not math.isfinite(r) for r in rewards):
        raise ValueError("rso: every reward must be a finite number")
    pool = list(range(len(rewards)))
    accepted: list[int] = []
    while pool and len(accepted) < k:
        envelope = max(rewards[i] for i in pool)
        j = rng.randrange(len(pool))
        i = pool[j]
        if rng.random() < math.exp((rewards[i] - envelope) / beta):
            accepted.append(i)
            pool.pop(j)
    return accepted


def first_round_pairs(accepted: Sequence[int], rewards: Sequence[float]) -> list[tuple[int, int]]:
    """(better, worse) for the consecutive pairs (a1, a2), (a3, a4), ... of `accepted`;
    an odd last sample and tied pairs give no pair."""
    out = []
    for a, b in zip(accepted[0::2], accepted[1::2]):
        if rewards[a] != rewards[b]:
            out.append((a, b) if rewards[a] > rewards[b] else (b, a))
    return out


def tournament_pairs(accepted: Sequence[int], rewards: Sequence[float]) -> list[tuple[int, int]]:
    """(better, worse) of every game of a single-elimination tournament over `accepted`
    in order: round one is `first_round_pairs`, winners meet in the next round, an odd
    one out gets a bye; a tied game advances the first player and gives no pair."""
    out: list[tuple[int, int]] = []
    players = list(accepted)
    while len(players) > 1:
        winners = []
        for a, b in zip(players[0::2], players[1::2]):
            win, lose = (a, b) if rewards[a] >= rewards[b] else (b, a)
            if rewards[a] != rewards[b]:
                out.append((win, lose))
            winners.append(win)
        if len(players) % 2:
            winners.append(players[-1])
        players = winners
    return out


def rso_records(ranked: Ranked, k: int, beta: float, seed: int = 0, pairing: str = "first-round") -> list[Ranked]:
    """The RSO preference data of one scored `Ranked` record (scores = rewards).

    pairing "first-round" / "tournament": one 2-response Ranked per pair (id `ID#rsoP`),
    the paper's constructions; "all": one Ranked of the k accepted responses, best first (a DPO/SLiC
    run then uses every pair among them). Unscored responses are left out of the pool.
    `meta.rso` = {beta, k, n, accepted}: accepted are indices into `ranked.responses`.
    The random stream depends only on (seed, record id), so reruns and resumes agree.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"rso: pairing must be one of {PAIRINGS}, got {pairing!r}")
    scored = [i for i, r in enumerate(ranked.responses) if r.score is not None and math.isfinite(r.score)]
    rewards = [float(ranked.responses[i].score) for i in scored]           # type: ignore[arg-type]
    rng = random.Random(f"rso:{seed}:{ranked.id}")
    accepted = [scored[i] for i in rejection_sample(rewards, k, beta, rng)]
    info = {"beta": beta, "k": min(k, len(scored)), "n": len(ranked.responses), "accepted": accepted}

    def response(i: int) -> Response:
        r = ranked.responses[i]
        return Response(r.content, r.score, r.source)

    if pairing == "all":
        if len(accepted) < 2:
            return []
        order = sorted(accepted, key=lambda i: -ranked.responses[i].score)  # type: ignore[operator]
        return [Ranked(ranked.id, list(ranked.messages), [response(i) for i in order], ranked.reference,
                       {**ranked.meta, "rso": info})]
    scores = {i: ranked.responses[i].score for i in accepted}
    make_pairs = first_round_pairs if pairing == "first-round" else tournament_pairs
    return [Ranked(f"{ranked.id}#rso{p}", list(ranked.messages), [response(hi), response(lo)], ranked.reference,
                   {**ranked.meta, "rso": {**info, "pair": [hi, lo]}})
            for p, (hi, lo) in enumerate(make_pairs(accepted, scores))]  # type: ignore[arg-type]


@dataclass
class RsoSummary:
    prompts: int = 0
    written: int = 0
    skipped_done: int = 0
    no_pairs: int = 0
    mean_accepted: float = 0.0     # mean reward of the accepted samples ...
    mean_all: float = 0.0          # ... against all candidates: how far beta tilts toward pi_r


def rso_file(records: Iterable[Ranked], out_path: str | Path, k: int, beta: float, seed: int = 0,
             pairing: str = "first-round") -> RsoSummary:
    """Append the RSO records of every scored Ranked record; a rerun skips ids already written."""
    summary = RsoSummary()
    accepted_n = all_n = 0
    with JsonlAppender(out_path) as out:
        for record in records:
            summary.prompts += 1
            made = rso_records(record, k, beta, seed, pairing)
            if not made:
                summary.no_pairs += 1
                continue
            info = made[0].meta["rso"]
            accepted_n += len(info["accepted"])
            summary.mean_accepted += sum(record.responses[i].score for i in info["accepted"])  # type: ignore[misc]
            scores = [r.score for r in record.responses if r.score is not None]
            all_n += len(scores)
            summary.mean_all += sum(scores)
            for item in made:
                if item.id in out.done_ids:
                    summary.skipped_done += 1
                else:
                    out.write(item)
                    summary.written += 1
    summary.mean_accepted = summary.mean_accepted / accepted_n if accepted_n else 0.0
    summary.mean_all = summary.mean_all / all_n if all_n else 0.0
    return summary
