"""The online loop: sample -> score -> advantages -> update, one readable step each.

    set up     accelerator, policy (+ value head), frozen reference, optimiser, schedule, resume
    per step   1. sample   G responses to each of the step's prompts from the current policy
                           (the generation engine synced with the policy's weights first)
               2. score    the reward spec on every response (each term's value logged)
               3. rollout  log-probs of the responses under the sampling policy and the
                           reference (and values), in one no-grad pass each
               4. advantages  the algorithm's pure function of the rollout
               5. update   `updates_per_step` optimiser passes over the batch, the loss divided
                           by the units of the whole batch (as the offline engine), so the
                           micro-batch size never changes the update
               6. log, checkpoint

The model, optimiser, schedule, checkpoints and final save are the training engine's
(`drover.train.engine`, `checkpoint`, `model`); only the loop is new. Everything a step
draws is a pure function of (seed, step, weights), so a resumed run is bit-identical to an
uninterrupted one; resuming with different settings is refused.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from drover.errors import ConfigError, DataError
from drover.rewards.kind import RewardInput, RewardSpec
from drover.runs import RunDir
from drover.train import checkpoint
from drover.train.batches import Collate, MicroBatch
from drover.train.data import Example
from drover.local.logprobs import per_sequence
from drover.train.online.algorithm import AlgorithmSpec, Current, Rollout, token_kl_k3
from drover.train.online.config import OnlineConfig
from drover.train.online.sampling import Prompt, Sample, sample_responses, step_prompts

REWARDS_LOG = "rewards.jsonl"


@dataclass
class OnlineResult:
    model_dir: Path | None        # None when stopped early (train.stop_after_steps)
    steps: int
    samples: int                  # responses sampled and trained on (this process, this invocation)
    updates: int                  # optimiser steps (this invocation)
    seconds: float
    first_reward: float
    last_reward: float


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad (n, t) with zeros to (n, width)."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x


class OnlineTrainer:
    def __init__(self, config: OnlineConfig, spec: AlgorithmSpec, params: Any, prompts: list[Prompt],
                 tokenizer: Any, rewards: RewardSpec, run: RunDir, resume_settings: dict[str, Any] | None = None):
        from drover.local.samplers import EngineSetup
        from drover.local.sequence_model import SequenceModel, load_backbone
        from drover.train.engine import lr_lambda, make_accelerator, make_optimizer
        from drover.train.model import sharded
        from drover.train.online.policy import build_policy
        from drover.train.online.resume import plan
        from drover.train.reference import compute_dtype

        t = config.train
        self.config, self.spec, self.params, self.prompts = config, spec, params, prompts
        self.tokenizer, self.rewards, self.run = tokenizer, rewards, run
        self.resume_settings = resume_settings or {}
        self.accelerator = acc = make_accelerator(t, run)
        config.check_processes(acc.num_processes, sharded(acc))
        reference = load_backbone(t.reference_path, False, None, allow_download=t.allow_download,
                                  dtype=compute_dtype(acc))
        self.reference = SequenceModel(reference, chunk=t.logprob_chunk).to(acc.device).eval().requires_grad_(False)
        policy = build_policy(t, spec.value_head, tokenizer.pad_token_id)
        # ratios, KL and the update under the distribution the samples were drawn from, softmax(logits /
        # temperature), for the reference too, where the algorithm asks (`AlgorithmSpec.at_sampling_temperature`)
        policy.temperature = self.reference.temperature = config.temperature if spec.at_sampling_temperature else 1.0
        optimizer = make_optimizer(policy, t)
        total, warmup = plan(config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.schedule, warmup, total))
        self.model, self.optimizer = acc.prepare(policy, optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.collate = Collate(tokenizer.pad_token_id, packing=False, pack_tokens=t.max_length)
        setup = EngineSetup(t.model, t.tokenizer_path, tokenizer, t.max_length, config.generation_batch_size, t.seed,
                            acc.process_index, acc.local_process_index, acc.num_processes, sharded=sharded(acc),
                            quantized=t.lora.qlora)
        self.sampler = config.engine_spec()(setup, config.engine_settings())

    # -- 1. sample ---------------------------------------------------------------------
    def sample(self, step: int) -> tuple[list[int], list[list[Sample]]]:
        """This process's prompt slots of the step and their responses."""
        acc, c = self.accelerator, self.config
        slots = list(range(step * c.prompts_per_step, (step + 1) * c.prompts_per_step))
        order = step_prompts(len(self.prompts), c.prompts_per_step, c.train.seed, step)
        mine = list(range(acc.process_index, len(slots), acc.num_processes))
        self.sampler.sync(acc.unwrap_model(self.model).model)   # the policy's weights as they are now
        prompts = [self.prompts[order[i]] for i in mine]
        texts = sample_responses(self.sampler, self.tokenizer, prompts, c, step, [slots[i] for i in mine])
        return [order[i] for i in mine], texts

    # -- 2. score ----------------------------------------------------------------------
    def score(self, step: int, prompt_ids: list[int], samples: list[list[Sample]]) -> torch.Tensor:
        """(N,) totals of the reward spec, NaN where a term had no verdict (a judge that failed);
        every response's terms (None for no verdict) appended to rewards.jsonl."""
        items = [RewardInput(self.prompts[p].messages, sample.text, self.prompts[p].record)
                 for p, group in zip(prompt_ids, samples) for sample in group]
        totals, terms = self.rewards.score(items)
        rows = []
        for n, item in enumerate(items):
            rows.append({"step": step, "process": self.accelerator.process_index, "prompt_id": item.record.id,
                         "sample": n % self.config.samples_per_prompt, "response": item.response,
                         "terms": {name: values[n] for name, values in terms.items()}, "reward": totals[n]})
        self._append_rewards(rows)
        return torch.tensor([math.nan if t is None else t for t in totals], dtype=torch.float32)

    def _append_rewards(self, rows: list[dict[str, Any]]) -> None:
        from drover.atomic import strict_dumps

        path = self.run.root / (REWARDS_LOG if self.accelerator.num_processes == 1
                                else f"rewards.{self.accelerator.process_index}.jsonl")
        with open(path, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(strict_dumps(row, ensure_ascii=False) + "\n")

    # -- 3. rollout --------------------------------------------------------------------
    def examples(self, prompt_ids: list[int], samples: list[list[Sample]]) -> list[Example]:
        """prompt + response tokens per sample, labels on the response (and its EOS)."""
        from drover.tokenization import IGNORE_INDEX, EncodedExample

        out = []
        for p, group in zip(prompt_ids, samples):
            prompt = self.prompts[p]
            for sample in group:
                seq = EncodedExample(prompt.ids + sample.ids, [IGNORE_INDEX] * len(prompt.ids) + sample.ids,
                                     record_id=prompt.record.id)
                out.append(Example(len(out), prompt.record.id, [seq], [0], [math.nan]))
        return out

    def micro_batches(self, examples: list[Example]) -> list[tuple[torch.Tensor, MicroBatch]]:
        """(rows, collated micro-batch) of `train.micro_batch_size` whole prompt groups each."""
        size = self.config.train.micro_batch_size * self.config.samples_per_prompt
        out = []
        for start in range(0, len(examples), size):
            chunk = examples[start:start + size]
            out.append((torch.arange(start, start + len(chunk)), self.collate(chunk).to(self.accelerator.device)))
        return out

    def forward(self, model: Any, mb: MicroBatch) -> Current:
        """Per-token log-probs (and values) as (n, t) tensors of the micro-batch's sequences."""
        with self.accelerator.autocast():
            out = model(**mb.model_args())
        logps, values = out if isinstance(out, tuple) else (out, None)
        logps, _ = per_sequence(logps.float(), mb.index)
        return Current(logps, None if values is None else per_sequence(values.float(), mb.index)[0])

    @torch.no_grad()
    def rollout(self, mbs: list[tuple[torch.Tensor, MicroBatch]], rewards: torch.Tensor) -> Rollout:
        parts = [(self.forward(self.model, mb), self.forward(self.reference, mb).logps, mb) for _, mb in mbs]
        width = max(cur.logps.shape[1] for cur, _, _ in parts)
        mask = torch.cat([pad_to(per_sequence(mb.index.ids.float(), mb.index)[1].float(), width) > 0
                          for _, _, mb in parts])
        old = torch.cat([pad_to(cur.logps, width) for cur, _, _ in parts])
        ref = torch.cat([pad_to(r, width) for _, r, _ in parts])
        values = (torch.cat([pad_to(cur.values, width) for cur, _, _ in parts])
                  if parts[0][0].values is not None else None)
        g = self.config.samples_per_prompt
        group = torch.arange(old.shape[0], device=old.device) // g
        return Rollout(mask, old, ref, values, rewards.to(old.device), group, g, self.world_sum)

    @staticmethod
    def drop_unjudged(rollout: Rollout) -> Rollout:
        """Leave out of the step every prompt group with a response no reward could judge (NaN):
        its rows lose their mask (no tokens, no units, no loss) and get a reward of 0 that
        no algorithm reads through a masked row's equal-reward group. A whole group goes,
        not one response: the group's baseline (GRPO, RLOO) or pair (online DPO) would
        otherwise rest on a guess."""
        unknown = torch.isnan(rollout.rewards)
        if not bool(unknown.any()):
            return rollout
        dropped = unknown.view(-1, rollout.group_size).any(dim=1).repeat_interleave(rollout.group_size)
        rollout.mask = rollout.mask & ~dropped.unsqueeze(1)
        rollout.rewards = torch.where(dropped, torch.zeros_like(rollout.rewards), rollout.rewards)
        return rollout

    def world_sum(self, x: torch.Tensor) -> torch.Tensor:
        """`x` summed over every process (the whole step's batch statistics)."""
        return self.accelerator.reduce(x, reduction="sum") if self.accelerator.num_processes > 1 else x

    # -- 5. update ---------------------------------------------------------------------
    def update(self, mbs: list[tuple[torch.Tensor, MicroBatch]], rollout: Rollout, adv: Any) -> dict[str, float]:
        """One optimiser step over the whole batch; returns per-unit loss and metrics."""
        acc, spec, params = self.accelerator, self.spec, self.params
        width = rollout.mask.shape[1]
        slices = [(rollout.select(rows.to(rollout.mask.device)), adv.select(rows.to(rollout.mask.device)), mb)
                  for rows, mb in mbs]
        with torch.no_grad():   # units from structure alone (zeros for log-probs and values)
            local = sum(float(spec.loss(Current(torch.zeros_like(r.old_logps),
                                                None if r.values is None else torch.zeros_like(r.values)),
                                        r, a, params).units) for r, a, _ in slices)
        units = float(acc.reduce(torch.tensor(local, dtype=torch.float64, device=acc.device), reduction="sum"))
        scale = acc.num_processes / units if units > 0 else 0.0
        sums: dict[str, float] = {"loss": 0.0}
        for i, (r, a, mb) in enumerate(slices):
            last = i == len(slices) - 1
            acc.sync_gradients = last
            with acc.no_sync(self.model) if not last else contextlib.nullcontext():
                cur = self.forward(self.model, mb)
                cur = Current(pad_to(cur.logps, width), None if cur.values is None else pad_to(cur.values, width))
                out = spec.loss(cur, r, a, params)
                acc.backward(out.loss_sum * scale)
            sums["loss"] += float(out.loss_sum.detach())
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        t = self.config.train
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm) if t.max_grad_norm > 0 else None
        keys = sorted(sums)
        total = acc.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=acc.device),
                           reduction="sum").tolist()
        loss = total[keys.index("loss")]
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)   # nothing of this step reaches the weights
            raise DataError(f"rl: the loss of this step is {loss} (gradient norm {float(grad_norm or 0.0)}), not "
                            f"finite: nothing of it was applied and the last checkpoint is kept; lower train.lr "
                            f"or look at the step's rewards in {self.run.root / REWARDS_LOG}")
        lr = self.scheduler.get_last_lr()[0]
        if units > 0:   # nothing to learn from (no pairs, every group unjudged): Adam's moments and weight
            self.optimizer.step()   # decay would still move the weights, so the weights stay as they are
        with warnings.catch_warnings():   # a skipped first optimiser step: the schedule still follows the steps
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats = {k: v / units if units else 0.0 for k, v in zip(keys, total)}
        stats.update(units=units, lr=lr)
        if grad_norm is not None:
            stats["grad_norm"] = float(grad_norm)
        return stats

    # -- the loop ----------------------------------------------------------------------
    def train(self, resume_from: Path | None, resume_hash: str) -> OnlineResult:
        from tqdm.auto import tqdm

        from drover.train.online import resume

        acc, c = self.accelerator, self.config
        total, warmup = resume.plan(c)
        state = checkpoint.TrainState(data_hash=resume_hash, settings=self.resume_settings, total_steps=total,
                                      warmup_steps=warmup)
        if resume_from is not None:
            resume.check(resume_from, checkpoint.read_state(resume_from), resume_hash, self.resume_settings, c)
            state = checkpoint.load(acc, resume_from)
            # later checkpoints record the plan (and settings) they continue under
            state.settings, state.total_steps, state.warmup_steps = self.resume_settings, total, warmup
        if acc.is_main_process:   # the steps after the checkpoint are redone and logged again: once each
            self.run.truncate_log(state.step, events=("train",))
            self._truncate_rewards_log(state.step)
        acc.wait_for_everyone()
        bar = tqdm(total=c.steps, initial=state.step, desc=self.spec.name,
                   disable=not (c.train.progress and acc.is_main_process), dynamic_ncols=True)
        start, n_samples, updates, resumed_at = time.perf_counter(), 0, 0, state.step
        first = last = math.nan
        while state.step < c.steps:
            prompt_ids, samples = self.sample(state.step)                        # 1
            rewards = self.score(state.step, prompt_ids, samples)                # 2
            examples = self.examples(prompt_ids, samples)
            mbs = self.micro_batches(examples)
            unjudged = float(torch.isnan(rewards).sum())                        # no verdict: left out
            rollout = self.drop_unjudged(self.rollout(mbs, rewards))             # 3
            adv = self.spec.advantages(rollout, self.params)                     # 4
            for _ in range(c.updates_per_step):                                  # 5
                stats = self.update(mbs, rollout, adv)
                updates += 1
            state.step += 1
            state.tokens += int(rollout.mask.sum())
            n_samples += len(examples)
            stats.update(self.rollout_stats(rollout, adv, unjudged),
                         samples_per_s=n_samples / (time.perf_counter() - start))
            first = stats["reward"] if math.isnan(first) else first
            last = stats["reward"] if not math.isnan(stats["reward"]) else last
            if state.step % c.train.log_every == 0 or state.step == c.steps:
                self.log(state, stats)
            bar.update(1)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.4f}", loss=f"{stats['loss']:.4f}")
            if c.train.save_every and state.step % c.train.save_every == 0 and state.step < c.steps:
                checkpoint.save(acc, self.run.checkpoints, state, c.train.keep_last)
            if c.train.stop_after_steps and state.step >= c.train.stop_after_steps and state.step < c.steps:
                bar.close()
                return OnlineResult(None, state.step, n_samples, updates, time.perf_counter() - start, first, last)
        bar.close()
        seconds = time.perf_counter() - start
        if resume_from is None or state.step != resumed_at:
            # (a run killed while writing its final model resumes at its last step: that checkpoint
            # is kept as it is, never replaced by an identical one, whose swap a kill could lose)
            checkpoint.save(acc, self.run.checkpoints, state, c.train.keep_last)
        model_dir = checkpoint.save_final(acc, self.model, self.tokenizer, self.run.root / "model",
                                          c.train.lora.merge)
        acc.end_training()
        return OnlineResult(model_dir, state.step, n_samples, updates, seconds, first, last)

    def rollout_stats(self, rollout: Rollout, adv: Any, unjudged: float = 0.0) -> dict[str, float]:
        """Means over the step (all processes) of what it trained on: reward, KL to the reference,
        response length; and counts of the responses a reward had no verdict on (`unjudged`) and
        of those left out with them, their whole prompt groups (`dropped`)."""
        mask = rollout.mask.float()
        kept = rollout.mask.any(dim=-1)            # responses trained on (a dropped group has none)
        kl_tokens = (token_kl_k3(rollout.old_logps, rollout.ref_logps) * mask).sum()
        log_ratio = ((rollout.old_logps - rollout.ref_logps) * mask).sum()
        values = [(rollout.rewards * kept).sum(), kept.sum(), kl_tokens, log_ratio, mask.sum(),
                  rollout.rewards.numel() - kept.sum(), unjudged]
        total = self.accelerator.reduce(torch.tensor([float(v) for v in values], dtype=torch.float64,
                                                     device=self.accelerator.device), reduction="sum").tolist()
        reward_sum, n, kl, ratio, tokens, dropped, unjudged = total

        def per(x: float, d: float) -> float:
            return x / d if d else math.nan   # nothing judged this step: no mean (null in log.jsonl)

        stats = {"reward": per(reward_sum, n), "kl": per(kl, tokens), "seq_log_ratio": per(ratio, n),
                 "response_tokens": per(tokens, n), "unjudged": unjudged, "dropped": dropped}
        stats.update({f"adv_{k}": v for k, v in (adv.metrics or {}).items()})
        return stats

    def _truncate_rewards_log(self, step: int) -> None:
        """Drop reward rows of steps after the checkpoint: a resumed run logs them again."""
        import json

        def before(line: str) -> bool:
            try:
                return json.loads(line)["step"] < step
            except (ValueError, TypeError, KeyError):
                return False   # a torn line: the process was killed mid-write (its step is redone)

        for path in self.run.root.glob("rewards*.jsonl"):
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [line for line in lines if line.strip() and before(line)]
            if len(kept) != len(lines):
                from drover.atomic import write_text

                write_text(path, "".join(kept))

    def log(self, state: checkpoint.TrainState, stats: dict[str, float]) -> None:
        if self.accelerator.is_main_process:
            self.run.log("train", step=state.step, **stats)
        self.accelerator.log(stats, step=state.step)


def prepare_online(config: OnlineConfig) -> tuple[OnlineTrainer, Path | None, str]:
    """Every check (algorithm, parameters, resume point, tokenizer, prompts, rewards) before
    anything is written; then the trainer, the checkpoint to resume from and the settings key."""
    from drover.config import from_dict
    from drover.identity import digest, path_fingerprint
    from drover.models import load_tokenizer
    from drover.rewards.kind import RewardContext
    from drover.train.online import resume
    from drover.train.online.algorithms import ALGORITHMS
    from drover.train.online.sampling import load_prompts
    from drover.train.runner import start_fresh

    config.validate()
    config.engine_spec().check(config.engine_settings())   # vllm importable, a GPU: before anything runs
    spec: AlgorithmSpec = ALGORITHMS.get(config.algorithm)
    params = from_dict(spec.params, config.algorithm_params, where="algorithm_params")
    if config.samples_per_prompt < spec.min_group_size:
        raise ConfigError(f"rl: {spec.name} needs samples_per_prompt >= {spec.min_group_size}, "
                          f"got {config.samples_per_prompt}")
    t = config.train
    run = RunDir(t.run_dir)
    resume_from = None if t.force else checkpoint.resolve_resume(t.resume_from, run.checkpoints)
    tokenizer = load_tokenizer(t.tokenizer_path, t.chat_template, allow_download=t.allow_download)
    prompts = load_prompts(config.prompts, tokenizer, t.max_length, config.max_new_tokens, t.on_bad_records)
    rewards = RewardSpec(config.rewards, RewardContext(llm_cache=run.llm_cache))
    for prompt in prompts:   # a record a reward cannot score fails now, not at its step
        problem = rewards.problem(prompt.record)
        if problem:
            raise DataError(f"{prompt.where}: record {prompt.record.id!r}: {problem}")
    prompts_key = [[p.record.id, p.ids, p.record.to_dict()] for p in prompts]
    # the policy and reference by content: a model retrained at the same path (a recipe's SFT
    # stage re-run) must not resume a policy trained from the other one against the new reference
    models = {f"train.{name} (content)": path_fingerprint(path) if Path(path).exists() else path
              for name, path in (("model", t.model), ("reference_model", t.reference_path))}
    models.update({f"rewards: {path} (content)": path_fingerprint(path) for path in rewards.input_paths})
    resume_hash = digest({"config": config.resume_key(), "prompts": prompts_key, "models": models})[7:23]
    settings = {**resume.settings(config, digest(prompts_key)[7:23]), **models}
    if resume_from is not None:   # a refused resume writes nothing: config.yaml and the logs stay as they were
        resume.check(resume_from, checkpoint.read_state(resume_from), resume_hash, settings, config)
    run.ensure()
    if t.force:
        start_fresh(run)
        for path in run.root.glob("rewards*.jsonl"):
            path.unlink()
    run.save_config(config)
    trainer = OnlineTrainer(config, spec, params, prompts, tokenizer, rewards, run, settings)
    return trainer, resume_from, resume_hash


def run_online(config: OnlineConfig, echo: bool = True) -> Path:
    """Check everything, then train; returns the final policy directory (or the checkpoints
    when stopped early). `drover rl` calls this."""
    trainer, resume_from, resume_hash = prepare_online(config)
    acc, run, name = trainer.accelerator, trainer.run, trainer.spec.name
    if resume_from is not None and echo and acc.is_main_process:
        print(f"drover rl: resuming from {resume_from}", file=sys.stderr)
    result = trainer.train(resume_from, resume_hash)
    summary = {"algorithm": name, **{k: v for k, v in asdict(result).items() if k != "model_dir"},
               "model": str(result.model_dir or "")}
    if acc.is_main_process:
        run.log("summary", **summary)
        if echo:
            where = result.model_dir or "(stopped early: checkpoints only)"
            print(f"drover rl {name}: {result.steps} steps, {result.samples} samples, {result.updates} updates "
                  f"in {result.seconds:.1f} s; mean reward {result.first_reward:.3f} (first step) -> "
                  f"{result.last_reward:.3f} (last)\n  rewards: {run.root / REWARDS_LOG}\n  model: {where}",
                  file=sys.stderr)
    return result.model_dir if result.model_dir is not None else run.checkpoints
