"""A value function that starts as the reward model: the critic TRL and InstructGPT build.

Holds :class:`RewardModelCritic`: a trainable copy of a decoder reward model whose
value of an observation window is the model's score of the text so far. At the
start of training it predicts each state's return by the reward model's prefix
score (the potential of ``pbrs``), which the default MLP on the policy's hidden
state cannot learn on the bundled tasks (``benchmarks/critic_probe.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from llm_gym.agents.decoding import IncrementalDecoder, shared_prefix_hidden
from llm_gym.rewards.hf import HFRewardModel

__all__ = ["RewardModelCritic"]


class RewardModelCritic(nn.Module):
    """``critic(input_ids, attention_mask)``: (batch, 1) values, a decoder reward model's
    scores of left-padded windows, with the model's weights trainable.

    Its forwards cost what the policy's do: in rollouts (eval mode, no gradient) the
    reward model's trunk decodes incrementally with a key/value cache, and in updates
    a minibatch's windows of one episode share one forward (``shared_prefix_hidden``).

    Args:
        model: hub id or folder of a decoder sequence classifier (last-token pooling)
            that reads the environment's token ids.
        score: which logits make the score, as :class:`~llm_gym.rewards.HFRewardModel`'s.
        trust_remote_code: passed to ``from_pretrained``.

    Example:
        >>> import torch, llm_gym.assets
        >>> critic = RewardModelCritic(str(llm_gym.assets.reward_model_path("default")))
        >>> critic(torch.tensor([[0, 5, 10]]), torch.tensor([[0, 1, 1]])).shape
        torch.Size([1, 1])
    """

    def __init__(
        self,
        model: str,
        score: str | int | tuple[str | int, str | int] = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        reward_model = HFRewardModel(
            model,
            score=score,
            device="cpu",
            trust_remote_code=trust_remote_code,
            dtype=torch.float32,
        )
        if reward_model.pooling != "last":
            raise ValueError(
                f"critic 'reward-model' reads the window's newest token, which needs a decoder "
                f"reward model (last-token pooling); {model!r} pools its first token"
            )
        self.reward_model = reward_model  # its forward and score definition, not a module
        self.model = reward_model.model.requires_grad_(True)  # registered: trained and saved
        self.model.eval()
        self.decoder = IncrementalDecoder(self.model.base_model)
        # loaded weights make cached keys and values stale, however the load is reached
        # (torch leaves the hook registration untyped)
        self.register_load_state_dict_pre_hook(lambda *_: self.decoder.reset())  # type: ignore[no-untyped-call]

    @property
    def vocab_size(self) -> int:
        """How many token ids the model's embedding reads."""
        return int(self.model.get_input_embeddings().num_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            hidden = self.decoder(input_ids, attention_mask)
        else:
            hidden = shared_prefix_hidden(self.model.base_model, input_ids, attention_mask)
        # the classifier's head on the window's newest token, as the reward model scores
        return self.reward_model.score_tensor(self.model.score(hidden))[:, None]

    def train(self, mode: bool = True) -> RewardModelCritic:
        super().train(mode)
        self.model.eval()  # no dropout: a state's value does not depend on the pass
        if mode:  # the weights are about to change: cached keys and values go stale
            self.decoder.reset()
        return self
