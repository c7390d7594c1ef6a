from scaffolding_backend.triton.scaffolding_model import (
    ScaffoldingModel as TritonPythonModel,  # noqa: F401
)
