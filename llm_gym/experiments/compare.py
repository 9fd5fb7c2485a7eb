"""``llm-gym compare``: train TokenPPO with several reward schemes side by side.

Each (method, seed) run trains one :class:`~llm_gym.agents.TokenPPO` on
LLMCompletion-v0 wrapped by that method's reward wrapper. Runs of the same seed
share the prompts drawn and the policy's initial weights, so differences between
methods are paired. Outputs, in the output folder:

- ``curves.csv``: per-update mean score, KL, completion length per method and seed;
- ``curves.png``: mean and spread over seeds per method;
- ``kl_frontier.png``: seed-mean score against seed-mean KL to the reference per method;
- ``summary.md``: the comparison table (:mod:`llm_gym.experiments.summary`) and
  the credit fidelity of each credit map used;
- ``tb/``: TensorBoard logs per run.

This module gathers the public names of the parts:

- :mod:`~llm_gym.experiments.methods`: the method registry (:data:`METHODS`,
  :func:`check_methods`, ...);
- :mod:`~llm_gym.experiments.presets`: :class:`ComparePreset`, :data:`PRESETS`,
  :func:`env_options`;
- :mod:`~llm_gym.experiments.runs`: :func:`make_method_env`, :func:`make_agent`,
  :func:`run_one`, :func:`run_compare` (with resume and ``jobs``);
- :mod:`~llm_gym.experiments.report`: :func:`write_report`, the plots and tables;
- :mod:`~llm_gym.experiments.summary`: the statistics.
"""

from __future__ import annotations

from llm_gym.experiments.methods import (
    METHODS,
    Method,
    MethodFamily,
    abc_layers_of,
    check_methods,
    registry,
    relevance_of,
)
from llm_gym.experiments.presets import PRESETS, ComparePreset, env_options
from llm_gym.experiments.report import (
    credit_fidelity_table,
    kl_table,
    plot_curves,
    plot_kl_frontier,
    write_report,
)
from llm_gym.experiments.runs import (
    CurveRecorder,
    make_agent,
    make_method_env,
    run_compare,
    run_one,
)
from llm_gym.experiments.summary import (
    kl_matched_table,
    load_curves,
    markdown_table,
    summarise,
    write_long_csv,
)

__all__ = [
    "METHODS",
    "PRESETS",
    "ComparePreset",
    "CurveRecorder",
    "Method",
    "MethodFamily",
    "abc_layers_of",
    "check_methods",
    "credit_fidelity_table",
    "env_options",
    "kl_matched_table",
    "kl_table",
    "load_curves",
    "make_agent",
    "make_method_env",
    "markdown_table",
    "plot_curves",
    "plot_kl_frontier",
    "registry",
    "relevance_of",
    "run_compare",
    "run_one",
    "summarise",
    "write_long_csv",
    "write_report",
]
