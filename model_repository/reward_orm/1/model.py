from scaffolding_backend.triton.reward_model import RewardModel as TritonPythonModel  # noqa: F401
