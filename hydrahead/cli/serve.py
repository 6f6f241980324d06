"""Serve a checkpoint (a hybrid, or the model it was converted from) with an OpenAI-compatible HTTP API:
transformers' own server (`transformers serve`) run with hydrahead's classes, so no remote code is trusted.
Endpoints: POST /v1/chat/completions (streaming with "stream": true), POST /v1/completions, GET /health,
GET /v1/models (the served model). Requests run one at a time through generate (on CUDA its default: the static
cache and the graph-captured decode step, not yet measured through the server); continuous batching is refused for
a hybrid. Needs pip install 'hydrahead[serving]'.

Example:
  hydrahead serve hybrid/ --port 8000
  curl http://127.0.0.1:8000/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "hybrid/", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32, "stream": true}'

The model name a client sends is the path as given on this command line (or none). A checkpoint without a chat
template (a base model, such as the demo's teacher) gets a plain one: the messages' contents joined as text.
`transformers serve --trust-remote-code hybrid/` serves the same checkpoint without hydrahead installed.
"""

from __future__ import annotations

import argparse

from hydrahead.cli.args import device, model_path, positive_int

HELP = "serve a checkpoint with an OpenAI-compatible HTTP API (transformers' server)"


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1-65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=model_path, help="checkpoint directory (a hybrid from `hydrahead convert`/`distill`, or any "
                                      "transformers causal LM with its tokenizer)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                              "machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=port, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--device", type=device, default="auto", help="auto (CUDA when there is one), cpu, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights' dtype (default auto: float32 on the CPU, the checkpoint's own on a GPU)")
    parser.add_argument("--chat-template", metavar="FILE",
                        help="a Jinja chat template to use instead of the checkpoint's")
    parser.add_argument("--continuous-batching", action="store_true",
                        help="transformers' continuous batching over a paged KV cache: refused for a hybrid "
                             "(a GDN head's state has no paged form); for a plain model, passed on")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="transformers' log level in the server (default warning)")


def run(args: argparse.Namespace) -> int:
    from hydrahead.serving import serve

    serve(args.model, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
          chat_template=args.chat_template, continuous_batching=args.continuous_batching, log_level=args.log_level)
    return 0
