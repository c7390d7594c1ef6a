"""Generation contracts, one adapter each, chosen by the ``generator_contract`` config
parameter of the scaffolding models."""

from __future__ import annotations

from .base import Capabilities, EngineReply, TritonContract, TritonRequest, finish
from .native import NativeContract

TRITON_CONTRACTS: dict[str, type[TritonContract]] = {
    contract.name: contract for contract in (NativeContract,)
}
CONTRACTS = sorted(TRITON_CONTRACTS)

__all__ = [
    "CONTRACTS",
    "TRITON_CONTRACTS",
    "Capabilities",
    "EngineReply",
    "TritonContract",
    "TritonRequest",
    "finish",
]
