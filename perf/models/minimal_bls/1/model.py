"""A hand-written majority@8 over BLS, as small as a Python-backend model can make it: the
reference ``scaffolding-bench bls`` measures the ``scaffolding`` model against.

It sends the generator what the scaffolding model's native contract sends (the same five
input tensors and four requested outputs, one decoupled BLS request per sample, waited on by
the same 128 executor threads) and none of the rest: no controller, no account, no deadline,
no client-leave watch, no metrics, no progress events. Two things it keeps because the
Python backend of Triton 2.51 needs them: the executor (``async_exec`` waits in the loop's
default one, 6 threads on 2 cores) and holding each finished response iterator a few seconds
(released by the stub without the GIL, a last reference crashed it: see
``scaffolding_backend/workers/triton_bls.py``, ``DecoupledResponses.retire``).
"""

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

SAMPLES = 8
MAX_TOKENS = 128
TEMPERATURE = 0.8
OUTPUTS = ["text_output", "num_input_tokens", "num_output_tokens", "finish_reason"]
BLS_THREADS = 128
KEEP_S = 5.0


def column(value, dtype):
    return np.array([[value]], dtype=dtype)


class TritonPythonModel:
    def initialize(self, args):
        self.executor_set = False
        self.finished = collections.deque()  # (time, response iterator)

    async def execute(self, requests):
        if not self.executor_set:
            executor = ThreadPoolExecutor(max_workers=BLS_THREADS)
            asyncio.get_running_loop().set_default_executor(executor)
            self.executor_set = True
        await asyncio.gather(*(self.serve(request) for request in requests))

    async def serve(self, request):
        sender = request.get_response_sender()
        prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(1, 1)
        seed = int(pb_utils.get_input_tensor_by_name(request, "seed").as_numpy().reshape(-1)[0])
        try:
            texts = await asyncio.gather(
                *(self.generate(prompt, seed * SAMPLES + index) for index in range(SAMPLES))
            )
            chosen = collections.Counter(texts).most_common(1)[0][0]
            outputs = [pb_utils.Tensor("text_output", np.array([chosen], dtype=np.object_))]
            response = pb_utils.InferenceResponse(output_tensors=outputs)
        except RuntimeError as error:
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def generate(self, prompt, seed):
        inputs = {
            "text_input": prompt,
            "max_tokens": column(MAX_TOKENS, np.int32),
            "temperature": column(TEMPERATURE, np.float32),
            "exclude_input_in_output": column(True, np.bool_),
            "seed": column(seed, np.uint64),
        }
        request = pb_utils.InferenceRequest(
            model_name="generator",
            inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
            requested_output_names=OUTPUTS,
        )
        responses = await request.async_exec(decoupled=True)
        text = None
        # the generator answers a request that does not stream with one response that also
        # ends it: reading to the end never blocks the event loop
        for response in responses:
            if response.has_error():
                raise RuntimeError(response.error().message())
            for tensor in response.output_tensors():
                if tensor.name() == "text_output":
                    text = tensor.as_numpy().reshape(-1)[0]
        now = time.monotonic()
        self.finished.append((now, responses))
        while now - self.finished[0][0] > KEEP_S:
            self.finished.popleft()
        return text

    def finalize(self):
        self.finished.clear()
