"""A real server on 127.0.0.1 around a tiny hybrid, in a subprocess, spoken to over HTTP (httpx): chat (plain and
streamed), a completion, concurrent clients, sampling, malformed requests, other models refused; the greedy text
is `generate`'s. `transformers serve --trust-remote-code` serves the same checkpoint without hydrahead (its
bundled code)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import hydrahead
from hydrahead.serving import PLAIN_CHAT_TEMPLATE, free_port, stop_server, wait_until_up
from tests.eval.conftest import bpe_tokenizer, tiny_models

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TOKENS = 12
PROMPTS = ("The key is 42. What is the key?", "Remember the word apple.")
# transformers' own server, in a process where hydrahead cannot be imported: the checkpoint's bundled code
TRANSFORMERS_SERVE = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "hydrahead" or name.startswith("hydrahead."):
            raise ImportError(f"no module named {name!r}")
sys.meta_path.insert(0, Block())
from transformers.cli.transformers import main
sys.argv = ["transformers", "serve", *sys.argv[1:]]
main()
"""


class Server:
    """A server subprocess whose output goes to a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_CACHE": str(log.parent / "no-hub-cache")}  # a fresh machine's: none
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(argv, cwd="/", env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(self.url, self.process, timeout=180)
        except hydrahead.ServingError as err:
            raise AssertionError(f"{err}:\n{self.stop()[-3000:]}") from err

    def stop(self) -> str:
        stop_server(self.process)
        return self.log.read_text()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    tokenizer = bpe_tokenizer()
    path = tmp_path_factory.mktemp("serve") / "hybrid"
    hydrahead.save_hybrid(tiny_models(tokenizer)["hybrid"], path, tokenizer)
    return path


@pytest.fixture(scope="module")
def greedy(checkpoint):
    """The text `generate` gives for a prompt, greedy, in this process (the reference)."""
    model, tokenizer = hydrahead.load_model(checkpoint), hydrahead.load_tokenizer(checkpoint)

    def text(prompt: str, chat: bool) -> str:
        if chat:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], chat_template=PLAIN_CHAT_TEMPLATE,
                                                add_generation_prompt=True, return_dict=True, return_tensors="pt")
            ids = ids["input_ids"]
        else:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
        return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return text


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    # served from a path with "@" in it: transformers' model manager took runs@2/hybrid for runs at revision 2/hybrid
    served = shutil.copytree(checkpoint, tmp_path_factory.mktemp("runs@2") / "hybrid")
    port = free_port()
    running = Server([sys.executable, "-m", "hydrahead", "serve", str(served), "--port", str(port)], port,
                     tmp_path_factory.mktemp("log") / "server.log")
    yield running.url, str(served)
    log = running.stop()
    assert "Traceback" not in log, log[-3000:]
    assert "generation flags are not valid" not in log, log[-3000:]  # logged for every `temperature: 0` request


def chat(url: str, prompt: str, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def streamed(url: str, path: str, body: dict) -> str:
    parts = []
    with httpx.stream("POST", f"{url}{path}", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[len("data: "):])
                assert "error" not in event, event
                choice = event["choices"][0]
                parts.append(choice.get("delta", {}).get("content") or choice.get("text") or "")
    return "".join(parts)


def test_chat_plain_and_streamed_are_generates_greedy_text(server, greedy):
    url, model_name = server
    expected = greedy(PROMPTS[0], chat=True)
    assert expected  # the tiny model writes something
    response = chat(url, PROMPTS[0], model=model_name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == expected
    assert body["model"] == model_name  # as /v1/models lists it, not transformers' `name@main`
    assert body["usage"]["completion_tokens"] == TOKENS and body["choices"][0]["finish_reason"] == "length"
    messages = [{"role": "user", "content": PROMPTS[0]}]
    assert streamed(url, "/v1/chat/completions", {"messages": messages, "max_tokens": TOKENS, "temperature": 0}) == expected


def test_completion_is_generates_greedy_text(server, greedy):
    url, model_name = server
    body = {"prompt": PROMPTS[1], "max_tokens": TOKENS, "temperature": 0}
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == greedy(PROMPTS[1], chat=False)
    assert response.json()["model"] == model_name
    assert streamed(url, "/v1/completions", body) == greedy(PROMPTS[1], chat=False)


def test_concurrent_clients_each_get_their_own_text(server, greedy):
    url, _ = server
    prompts = [PROMPTS[i % 2] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda p: chat(url, p), prompts))
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [greedy(p, chat=True) for p in prompts]


def test_sampling_follows_the_seed(server):
    url, _ = server
    texts = [chat(url, PROMPTS[0], temperature=1.5, top_p=0.95, seed=seed).json()["choices"][0]["message"]["content"]
             for seed in (3, 3, 4)]
    assert texts[0] == texts[1]
    assert len(set(texts)) == 2  # a random tiny model at temperature 1.5: another seed, another text


def test_overlapping_requests_each_follow_their_seed(server):
    """Requests run one at a time; each seed must seed its own generate, not the one running when it arrives."""
    url, _ = server
    sample = lambda seed: chat(url, PROMPTS[0], temperature=1.5, max_tokens=48, seed=seed)  # noqa: E731
    alone = [sample(seed).json()["choices"][0]["message"]["content"] for seed in (3, 4, 5, 6)]
    with ThreadPoolExecutor(4) as pool:
        together = [r.json()["choices"][0]["message"]["content"] for r in pool.map(sample, (3, 4, 5, 6))]
    assert together == alone
    assert len(set(alone)) == 4


def test_only_the_served_model_is_loaded(server, checkpoint, greedy):
    """`/load_model` of another model is refused (transformers' manager loaded any path or Hub id, for good);
    `/reset` keeps the served model, which still answers."""
    url, model_name = server
    response = httpx.post(f"{url}/load_model", json={"model": str(checkpoint)}, timeout=60)
    events = [json.loads(line[len("data: "):]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [event["status"] for event in events] == ["error"]
    assert f"this server answers for {model_name!r} only, not {str(checkpoint)!r}" in events[0]["message"]
    response = httpx.post(f"{url}/load_model", json={"model": model_name}, timeout=60)
    assert '"status": "ready"' in response.text
    assert httpx.post(f"{url}/reset", timeout=60).status_code == 200
    assert chat(url, PROMPTS[0]).json()["choices"][0]["message"]["content"] == greedy(PROMPTS[0], chat=True)


def test_models_lists_the_served_model(server):
    url, model_name = server  # transformers' list (its Hugging Face cache, none here) answered 500
    response = httpx.get(f"{url}/v1/models", timeout=30)
    assert response.status_code == 200, response.text
    assert [model["id"] for model in response.json()["data"]] == [model_name]


def test_malformed_requests_get_http_errors_and_the_server_stays_up(server, greedy):
    url, model_name = server
    post = lambda body, path="/v1/chat/completions": httpx.post(f"{url}{path}", json=body, timeout=60)  # noqa: E731
    assert httpx.post(f"{url}/v1/chat/completions", content=b"{not json", timeout=60,
                      headers={"content-type": "application/json"}).status_code == 422
    assert post({"messages": [{"role": "user", "content": "hi"}], "bogus_field": 1}).status_code == 422
    assert post({"model": "another-model", "messages": [{"role": "user", "content": "hi"}]}).status_code == 400
    assert post({"prompt": ["a", "list"]}, "/v1/completions").status_code == 400
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert chat(url, PROMPTS[0]).json()["choices"][0]["message"]["content"] == greedy(PROMPTS[0], chat=True)


def test_transformers_serve_with_remote_code_and_no_hydrahead(checkpoint, greedy, tmp_path):
    """`transformers serve --trust-remote-code DIR` as typed (hydrahead not importable): the checkpoint's code
    names its class where transformers' model manager looks; continuous batching falls back to sequential
    generation (a hybrid has no `init_continuous_batching`), so the text is still `generate`'s."""
    port = free_port()
    running = Server([sys.executable, "-c", TRANSFORMERS_SERVE, "--trust-remote-code", "--continuous-batching",
                      "--port", str(port), str(checkpoint)], port, tmp_path / "server.log")
    url = running.url
    try:
        body = {"model": str(checkpoint), "prompt": PROMPTS[1], "max_tokens": TOKENS, "temperature": 0}
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == greedy(PROMPTS[1], chat=False)
    finally:
        log = running.stop()
    assert "does not support continuous batching. Falling back to sequential generation" in log, log[-3000:]


def test_a_taken_port_is_one_line_before_loading(checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "hydrahead", "serve", str(checkpoint), "--port", str(port)],
                              capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"hydrahead serve: error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port"]


def test_weights_that_do_not_match_the_config_are_refused_not_served(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(checkpoint, tmp_path / "hybrid")
    weights = load_file(broken / "model.safetensors")
    dropped = next(name for name in weights if "gdn" in name)
    save_file({k: v for k, v in weights.items() if k != dropped}, broken / "model.safetensors", {"format": "pt"})
    proc = subprocess.run([sys.executable, "-m", "hydrahead", "serve", str(broken), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, cwd="/")  # served random weights, until killed
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hydrahead serve: error: ")
    assert dropped in proc.stderr


def test_a_port_taken_after_the_check_is_one_line(checkpoint):
    """A port taken between the check and Uvicorn's start: Uvicorn exits (SystemExit) after logging why."""
    script = ("import socket, sys, hydrahead.serving as serving, hydrahead.cli as cli\n"
              "taken = socket.socket(); taken.bind(('127.0.0.1', 0)); taken.listen()\n"
              "serving.check_port = lambda host, port: None\n"
              "sys.exit(cli.main(['serve', sys.argv[1], '--port', str(taken.getsockname()[1])]))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(checkpoint)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"hydrahead serve: error: the server for {checkpoint} could not "
                                                    "start (Uvicorn's message above says why)")


def test_every_address_of_a_host_is_checked(monkeypatch):
    """"localhost" is often ::1 and 127.0.0.1, and Uvicorn binds both: a port taken on the second one counts."""
    from hydrahead.serving import check_port

    try:
        with socket.socket(socket.AF_INET6) as loopback:
            loopback.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        both = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: both)
        with pytest.raises(hydrahead.ServingError, match=f"cannot listen on localhost:{port}: Address already in use"):
            check_port("localhost", port)


def test_a_host_that_is_not_this_machines_is_blamed_not_the_port():
    from hydrahead.serving import check_port

    nonlocal_bind = Path("/proc/sys/net/ipv4/ip_nonlocal_bind")
    if nonlocal_bind.is_file() and nonlocal_bind.read_text().strip() != "0":
        pytest.skip("this machine lets a socket bind any address (net.ipv4.ip_nonlocal_bind)")

    with pytest.raises(hydrahead.ServingError, match=r"cannot listen on 192.0.2.1:8000: .*; --host is not an address of this "
                                           r"machine: use 127.0.0.1"):
        check_port("192.0.2.1", 8000)  # TEST-NET-1: no machine's address


@pytest.mark.parametrize("port, message", [(70000, "1-65535, got 70000"), (0, "1-65535, got 0"),
                                           (8.5, "port must be an integer, got 8.5")])
def test_a_port_out_of_range_is_refused_before_loading(port, message):
    from hydrahead.serving import check_port

    with pytest.raises(hydrahead.ServingError, match=message):  # getaddrinfo wrapped 70000; uvicorn then failed
        check_port("127.0.0.1", port)
