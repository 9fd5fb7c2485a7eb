"""Leave-one-out credit against a reward model: what each token adds to the score.

Holds :class:`LeaveOneOut`: for a completion of T tokens, the score R of the
whole text minus the score with token t deleted, for every t, from ONE batched
reward-model call of T rows per completion (T + 1 when R is not given). It needs
no rule and no attention: it asks the reward model itself, so it is a measured
reference for any credit map, at the cost of T extra rows per episode.
"""

from __future__ import annotations

import numpy as np

from llm_gym.rewards.base import CompletionBatch, RewardModel

__all__ = ["LeaveOneOut"]


class LeaveOneOut:
    """``contributions(batch)``: per completion, ``R - R(completion without token t)`` for each t.

    Deleting a token (rather than replacing it by a padding or mask id the reward
    model never saw in training) keeps every scored text a text of the
    environment's language; later tokens move one position left.

    Args:
        reward_model: any :class:`~llm_gym.rewards.RewardModel`.
        max_rows: most rows per reward-model call (a batch of completions is split
            between calls, never a completion).

    Example:
        >>> import numpy as np, llm_gym.assets
        >>> from llm_gym.rewards import CompletionBatch, HFRewardModel
        >>> from llm_gym.rewards.loading import load_tokenizer
        >>> tokenizer = load_tokenizer(str(llm_gym.assets.TOKENIZER_DIR))
        >>> ids = lambda text: np.array(tokenizer(text, add_special_tokens=False)["input_ids"])
        >>> rm = HFRewardModel(llm_gym.assets.reward_model_path("default"), device="cpu")
        >>> batch = CompletionBatch([ids("the acting")], [ids("was very good .")], tokenizer)
        >>> terms = LeaveOneOut(rm)(batch)[0]
        >>> int(np.argmax(terms)), bool(terms.max() > 1.0)  # deleting "good" costs the most
        (2, True)
    """

    def __init__(self, reward_model: RewardModel, max_rows: int = 4096) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.reward_model, self.max_rows = reward_model, int(max_rows)

    def __call__(
        self, batch: CompletionBatch, scores: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Per completion of ``batch``, one contribution per token (``scores``: each R, if known)."""
        if scores is not None and len(scores) != len(batch):
            raise ValueError(
                f"got {len(scores)} scores for a batch of {len(batch)}; expected one per completion"
            )
        out: list[np.ndarray] = []
        start = 0
        while start < len(batch):
            stop, rows = start, 0
            while stop < len(batch) and (
                stop == start or rows + len(batch.completion_ids[stop]) + 1 <= self.max_rows
            ):
                rows += len(batch.completion_ids[stop]) + 1
                stop += 1
            out += self._chunk(batch, start, stop, scores)
            start = stop
        return out

    def _chunk(
        self, batch: CompletionBatch, start: int, stop: int, scores: np.ndarray | None
    ) -> list[np.ndarray]:
        prompts: list[np.ndarray] = []
        completions: list[np.ndarray] = []
        for i in range(start, stop):
            completion = np.asarray(batch.completion_ids[i], dtype=np.int64)
            if scores is None:
                prompts.append(batch.prompt_ids[i])
                completions.append(completion)
            for t in range(len(completion)):
                prompts.append(batch.prompt_ids[i])
                completions.append(np.delete(completion, t))
        rows = self.reward_model(CompletionBatch(prompts, completions, batch.tokenizer)).scores
        out, k = [], 0
        for i in range(start, stop):
            n = len(batch.completion_ids[i])
            if scores is None:
                full, k = float(rows[k]), k + 1
            else:
                full = float(scores[i])
            out.append(full - rows[k : k + n])
            k += n
        return out
