from scaffolding_backend.triton.generator_model import (
    ProgramGeneratorModel as TritonPythonModel,  # noqa: F401
)
