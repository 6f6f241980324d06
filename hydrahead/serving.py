"""Serve a checkpoint over HTTP with an OpenAI-compatible API: transformers' own server (`transformers serve`:
FastAPI + Uvicorn, `/v1/chat/completions` with streaming, `/v1/completions`, `/health`), run in
this process with hydrahead's classes. Needs `pip install 'hydrahead[serving]'`.

    serve("hybrid/", port=8000)       # blocks until Ctrl-C

What hydrahead adds to `transformers serve`:
- its classes where transformers' model manager looks for them (`expose_in_transformers`), so no remote code
  has to be trusted (`transformers serve --trust-remote-code DIR` works too: the checkpoint's modeling code
  does the same when it is loaded);
- checks before any work (the directory, the tokenizer, the port), each failing in one line;
- the model loaded by hydrahead's own loader (`load_model`: a tensor missing from the weights or of the wrong
  shape is refused, not left random; a path with `@` in it is a path, not a Hub revision), and the server
  answers for that model only: `/load_model` of any other is refused, and `/reset` frees nothing (the next
  request gets the same model);
- float32 on the CPU unless asked otherwise (a checkpoint saved in half precision would run in it);
- a plain chat template for a checkpoint without one (the demo's teacher is a base model): the messages'
  contents joined, so a chat request is the text itself;
- a request's `temperature` > 0 samples (transformers' server keeps the checkpoint's `do_sample`, so a
  checkpoint saved greedy, as most converted or trained-here ones are, would ignore it with a log warning),
  and its `seed` seeds that request's own `generate` (transformers seeds when a request arrives, so a request
  still generating drew from the next one's seed);
- continuous batching refused for a hybrid (`CONTINUOUS_BATCHING`): requests run one at a time through
  `generate`, which on CUDA is the static cache and the graph-captured decode step.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from hydrahead.errors import ServingError, integer, one_line
from hydrahead.generation import render_chat

# A base model's "chat": the messages' contents, in order, as one text (no roles, nothing added).
PLAIN_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
SERVING_EXTRA = "pip install 'hydrahead[serving]'"


def describe(config: dict) -> str:
    """One line on what a checkpoint holds, from its config.json: a hybrid's plan, or the plain model it is."""
    from types import SimpleNamespace

    from hydrahead.models.hybrid import plan_and_options
    from hydrahead.models.loading import hybrid_model_types

    if config.get("model_type") not in hybrid_model_types():
        return f"a {config.get('model_type')} model (not a hybrid)"
    # what the model's constructor will read, checked the same way (CheckpointError when the entry is absent)
    plan, _ = plan_and_options(SimpleNamespace(model_type=config["model_type"], hydrahead=config.get("hydrahead")))
    ratio = "all GDN" if plan.num_fa == 0 else f"LA:FA {plan.la_fa_ratio:.2f}:1"
    return (f"a hydrahead {config['model_type'].removeprefix('hydrahead_')} hybrid ({plan.num_fa} FA heads, "
            f"{plan.num_la} GDN heads, {ratio}; KV cache {100 * plan.kv_cache_fraction:.1f}% of the teacher's)")


def check_port(host: str, port: int) -> None:
    """ServingError unless `host:port` can be listened on now (so a taken port fails before the model loads)."""
    if not 1 <= integer(port, "port", ServingError) <= 65535:  # getaddrinfo wraps a larger one
        raise ServingError(f"port must be a TCP port, 1-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ServingError(f"cannot listen on {host}:{port}: unknown host ({err.strerror or err})") from err
    # Every address the name resolves to, as Uvicorn (asyncio's create_server) binds them: "localhost" is often
    # ::1 and 127.0.0.1, and a port taken on either stops the server
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this machine lacks (IPv6 off): asyncio skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as err:
                advice = _bind_advice(err, port)
                raise ServingError(f"cannot listen on {host}:{port}: {err.strerror or err}; {advice}") from err


def _bind_advice(err: OSError, port: int) -> str:
    """What to change when a bind fails: the address (not this machine's), the port (taken, or privileged)."""
    import errno

    if err.errno == errno.EADDRNOTAVAIL:
        return "--host is not an address of this machine: use 127.0.0.1 (this machine only) or 0.0.0.0 (all)"
    if err.errno == errno.EACCES and port < 1024:
        return "ports below 1024 need administrator rights: choose a --port above 1023"
    return "choose another --port"


def chat_template_of(tokenizer, chat_template: str | Path | None) -> tuple[str | None, str]:
    """(the template to pass with each request or None for the checkpoint's own, what it is in words)."""
    if chat_template is not None:
        import jinja2

        from hydrahead.utils.io import read_text

        # os.path.exists, not Path.exists: a real template is longer than a file name may be (OSError)
        if any(mark in str(chat_template) for mark in ("{{", "{%")) and not os.path.exists(chat_template):
            raise ServingError("chat_template takes the path of a file holding a Jinja template, got the template "
                               "itself: save it to a file and give its path")
        text = read_text(chat_template, ServingError, "chat template file")
        if not text.strip():
            raise ServingError(f"chat template file {chat_template} is empty")
        try:  # a syntax error found now, not as an HTTP 500 on every chat request
            jinja2.Environment().parse(text)
        except jinja2.TemplateSyntaxError as err:
            raise ServingError(f"chat template file {chat_template} is not a valid Jinja template: {err.message} "
                               f"(line {err.lineno})") from None
        chosen = text, f"the chat template in {chat_template}"
    elif getattr(tokenizer, "chat_template", None):
        chosen = None, "the checkpoint's chat template"
    else:
        chosen = PLAIN_CHAT_TEMPLATE, "no chat template in the checkpoint: chat messages are joined as plain text"
    # one user message rendered now: a template that fails on it would fail every chat request
    render_chat(tokenizer, "hello", ServingError, "give another with --chat-template FILE", chosen[0], tokenize=False)
    return chosen


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for a server a script or test starts)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process=None, timeout: float = 180.0) -> None:
    """Return once the server at `url` answers /health; ServingError if `process` (a subprocess.Popen running
    it) exits first, or after `timeout` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServingError(f"the server for {url} exited with status {process.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServingError(f"the server for {url} did not answer /health within {timeout:.0f} s")


def stop_server(process, timeout: float = 20.0) -> None:
    """Stop a server subprocess as Ctrl-C would (uvicorn shuts down gracefully), killing it if it hangs."""
    import signal
    import subprocess

    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def sample_when_asked() -> None:
    """In this (server) process: a request with `temperature` > 0 samples, whatever the checkpoint's
    generation config says; `temperature` 0 stays greedy (transformers sets that itself), without transformers'
    warning on every such request that the temperature flag is not valid."""
    from transformers.cli.serving.utils import BaseHandler

    # A process-wide change to transformers' request handling (tested against the pinned transformers in
    # tests/serving): made only by `serve`, whose process is the server.
    build = BaseHandler._build_generation_config
    if getattr(build, "hydrahead_samples", False):
        return

    def build_config(self, body, model_generation_config, use_cb=False):
        # transformers would seed here, while another request may be generating; continuous batching never calls
        # generate, so its requests keep transformers' seeding
        seed = None if use_cb else body.pop("seed", None)
        config = build(self, body, model_generation_config, use_cb=use_cb)
        if seed is not None:
            config.hydrahead_seed = seed  # seeded on the inference thread as its generate starts (`seed_each_request`)
        if body.get("temperature") is None or body.get("generation_config") is not None:
            return config  # a client's own generation config is kept as sent
        if float(body["temperature"]) > 0:
            config.do_sample = True
        elif not config.do_sample:  # greedy: a temperature of 0 kept would be logged as an invalid flag
            config.temperature = None
        return config

    build_config.hydrahead_samples = True
    BaseHandler._build_generation_config = build_config


def name_as_listed() -> None:
    """In this (server) process: a response names its model as `/v1/models` lists it (the name a client sends),
    not with the `@main` revision transformers' server adds to a Hub id (a local directory has no revision)."""
    from transformers.cli.serving.utils import BaseHandler

    resolve = BaseHandler._resolve_model
    if getattr(resolve, "hydrahead_names", False):
        return

    def resolve_model(self, body):
        model_id, model, processor = resolve(self, body)  # loaded under transformers' own `id@revision` key
        return model_id.removesuffix("@main"), model, processor

    resolve_model.hydrahead_names = True
    BaseHandler._resolve_model = resolve_model


def seed_each_request(model) -> None:
    """`model.generate` (of the served model, in this server process) seeds torch's generator with the request's
    `seed` (`sample_when_asked` keeps it in the request's generation config) just before it generates: on the
    inference thread, where requests run one at a time in the order they came."""
    import torch

    generate = model.generate

    def generate_seeded(*args, **kwargs):
        config = kwargs.get("generation_config")
        seed = getattr(config, "hydrahead_seed", None)
        if seed is not None:
            del config.hydrahead_seed  # not a generation setting: kept out of generate's checks
            torch.manual_seed(seed)
        return generate(*args, **kwargs)

    model.generate = generate_seeded


def answer_for(name: str, model, tokenizer) -> None:
    """In this (server) process: transformers' model manager hands out `model` and `tokenizer` (loaded by
    hydrahead, with its checks) for the served `name`, and refuses any other model (`/load_model`) instead of
    loading it, for good, from a path or the Hub. Its own loader splits a name at "@" as a Hub revision (a path
    such as runs/a@b/ loaded runs/a) and leaves a tensor missing from the weights at random values."""
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.utils import split_model_id

    served = ModelManager.process_model_name(split_model_id(name)[0])  # the key the manager loads it under

    def refusal(model_id_and_revision: str) -> str:
        asked = model_id_and_revision.removesuffix("@main")
        return f"this server answers for {name!r} only, not {asked!r}; start another for that one"

    def loaded(model_id_and_revision: str, held):
        if model_id_and_revision != served:  # an HTTP 400 to the client (a handler without the pinned-model check)
            from fastapi import HTTPException

            raise HTTPException(status_code=400, detail=refusal(model_id_and_revision))
        return held

    # transformers' own, where an earlier `serve` in this process replaced it
    stream = getattr(ModelManager.load_model_streaming, "original", ModelManager.load_model_streaming)

    async def load_model_streaming(self, model_id_and_revision: str):  # `/load_model`'s progress events
        if model_id_and_revision != served:  # refused as an event, without the traceback the manager would log
            event = {"status": "error", "model": model_id_and_revision, "message": refusal(model_id_and_revision)}
            yield f"data: {json.dumps(event)}\n\n"
            return
        async for event in stream(self, model_id_and_revision):
            yield event

    load_model_streaming.original = stream
    ModelManager._load_model = lambda self, model_id_and_revision, **_: loaded(model_id_and_revision, model)
    ModelManager._load_processor = lambda self, model_id_and_revision, **_: loaded(model_id_and_revision, tokenizer)
    ModelManager.load_model_streaming = load_model_streaming


def list_served_model(name: str) -> None:
    """In this (server) process: `/v1/models` lists the one model the server answers for (`name`), as OpenAI's
    API does for a client that asks which model to send. transformers' server lists the Hugging Face cache
    instead, even when pinned to one model, and answers 500 where there is no cache."""
    from transformers.cli.serving.model_manager import ModelManager

    entry = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "hydrahead"}
    ModelManager.get_gen_models = staticmethod(lambda cache_dir=None: [entry])


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", dtype: str = "auto",
          chat_template: str | Path | None = None, continuous_batching: bool = False,
          log_level: str = "warning") -> None:
    """Serve the checkpoint in `path` until interrupted. `dtype` "auto" is float32 on the CPU and the
    checkpoint's own dtype on a GPU. The model name clients send is `path` as given (or none)."""
    from hydrahead.models.hybrid import CONTINUOUS_BATCHING, HYBRID_CLASSES, expose_in_transformers
    from hydrahead.models.files import check_model_path
    from hydrahead.models.loading import (find_gguf, hybrid_model_types, inference_dtype, load_model, load_tokenizer,
                                          read_config, resolve_device)

    if find_gguf(Path(path)) is not None:
        raise ServingError(f"{path}: a .gguf model is served after `hydrahead export {path} DIR`, as DIR")
    check_model_path(path)  # config.json and the weights' headers; the tokenizer is loaded below
    config = read_config(path)
    summary = describe(config)  # a hybrid's plan and options, checked
    if continuous_batching and config.get("model_type") in hybrid_model_types():
        raise ServingError(CONTINUOUS_BATCHING)
    target = resolve_device(device)
    dtype = inference_dtype(dtype, target)
    tokenizer = load_tokenizer(path)
    template, template_note = chat_template_of(tokenizer, chat_template)
    check_port(host, port)
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:  # pragma: no cover - transformers always has it in the pinned range
        is_serve_available = None
    if is_serve_available is None or not is_serve_available():
        raise ServingError(f"serving needs FastAPI, Uvicorn and openai: {SERVING_EXTRA}")
    import transformers.cli.serving.model_manager  # noqa: F401 - the module object whose names serve reads
    from transformers.cli.serve import Serve

    expose_in_transformers(*(model_class for _, model_class in HYBRID_CLASSES.values()))
    print(f"serving {path}: {summary}", flush=True)
    model = load_model(path, dtype, target)  # CheckpointError for weights that do not match the config
    seed_each_request(model)
    answer_for(str(path), model, tokenizer)
    sample_when_asked()
    name_as_listed()
    list_served_model(str(path))
    batching = "continuous batching" if continuous_batching else "requests run one at a time"
    dtype_name = str(next(model.parameters()).dtype).removeprefix("torch.")
    print(f"  on {target} in {dtype_name}; {template_note}; {batching}", flush=True)
    print(f"  OpenAI API at http://{host}:{port}/v1 (model name: {str(path)!r}); Ctrl-C stops", flush=True)
    try:  # the manager's device and dtype are unused: it hands out the model loaded above (`answer_for`)
        Serve(force_model=str(path), device=str(target), dtype="auto", host=host, port=port,
              continuous_batching=continuous_batching, log_level=log_level,
              chat_template_kwargs=json.dumps({"chat_template": template}) if template else None)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # the server itself
        raise ServingError(f"the server for {path} stopped: {one_line(err)}") from err
    except SystemExit as err:  # Uvicorn's exit when it cannot start, after logging why (a port taken since the check)
        if err.code:
            raise ServingError(f"the server for {path} could not start (Uvicorn's message above says why)") from None
