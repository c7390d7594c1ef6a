from scaffolding_backend.triton.generator_model import (
    GeneratorModel as TritonPythonModel,  # noqa: F401
)
