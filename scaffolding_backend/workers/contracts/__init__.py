"""Generation contracts, one adapter each, chosen by the ``generator_contract`` config
parameter of the scaffolding models (``generator_release`` picks a release where the
contract changed)."""

from __future__ import annotations

from .base import Capabilities, ContractError, EngineReply, TritonContract, TritonRequest, finish
from .llmapi import LLMAPIContract
from .native import NativeContract
from .tensorrt_llm import TensorRTLLMBLSContract, TensorRTLLMContract
from .vllm import VLLMContract

TRITON_CONTRACTS: dict[str, type[TritonContract]] = {
    contract.name: contract
    for contract in (
        NativeContract,
        TensorRTLLMContract,
        TensorRTLLMBLSContract,
        LLMAPIContract,
        VLLMContract,
    )
}
HTTP_CONTRACTS = ("openai",)
CONTRACTS = sorted([*TRITON_CONTRACTS, *HTTP_CONTRACTS])

__all__ = [
    "CONTRACTS",
    "HTTP_CONTRACTS",
    "TRITON_CONTRACTS",
    "Capabilities",
    "ContractError",
    "EngineReply",
    "TritonContract",
    "TritonRequest",
    "finish",
]
