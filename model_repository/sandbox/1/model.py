from scaffolding_backend.triton.sandbox_model import SandboxModel as TritonPythonModel  # noqa: F401
