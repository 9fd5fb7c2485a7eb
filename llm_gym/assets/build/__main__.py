"""``python -m llm_gym.assets.build``: rebuild the embedded default world."""

from llm_gym.assets.build.pipeline import main

main()
